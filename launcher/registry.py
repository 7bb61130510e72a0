"""Images for targets that pull them (Vast): an image folder built here goes to the user's
registry, once per content.

`LAUNCH_REGISTRY=host[:port]/prefix` names it (ghcr.io/you, docker.io/you, 127.0.0.1:5000/lab).
The image keeps its content tag (`launch-<name>:<hash>`, launcher/images.py) under that prefix,
so a tag names one content everywhere: an unchanged image is never pushed twice (this machine
remembers what it pushed where), and a changed one is a new tag, never an overwrite a running
instance could pull half of. Docker's own credentials (`docker login`) are used for the push.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from launcher import settings
from launcher.errors import TargetUnavailableError

if TYPE_CHECKING:
    from launcher.targets.local.docker_client import DockerClient

REGISTRY_ENV = "LAUNCH_REGISTRY"
REGISTRY_HINT = (
    f"export {REGISTRY_ENV}=host[:port]/prefix (a registry the machines can pull from, e.g. "
    "ghcr.io/you or docker.io/you, after `docker login`): launch pushes the image there once "
    "per content"
)


def configured() -> str | None:
    """The registry images are pushed to, or None when none is set."""
    return settings.registry(REGISTRY_ENV)


def is_reference(image: str) -> bool:
    """`pytorch/pytorch:2.5.1-...`, `ghcr.io/org/img:tag`, `img@sha256:...`: an image a
    registry holds, as opposed to a folder under images/."""
    return any(c in image for c in "/:@")


def has_registry_host(ref: str) -> bool:
    """Does `ref` name a registry host (ghcr.io/..., 127.0.0.1:5000/..., localhost/...)?
    Otherwise it is Docker Hub's, or an image only a local engine has."""
    first = ref.split("/", 1)[0]
    return "/" in ref and ("." in first or ":" in first or first == "localhost")


def remote_ref(registry: str, local_tag: str) -> str:
    return f"{registry}/{local_tag}"


def _layers_pushed(notify: Callable[[str], None]) -> Callable[[str], None]:
    """An `on_line` for `docker push` that says each layer as it is done ("push: 3 of 8 layers
    (2 already there)"): a push of gigabytes is minutes."""
    seen = {"total": 0, "done": 0, "there": 0}

    def on_line(status: str) -> None:
        if status == "Preparing":
            seen["total"] += 1
        elif status in ("Pushed", "Layer already exists") or status.startswith("Mounted"):
            seen["done"] += 1
            seen["there"] += status != "Pushed"
            there = f" ({seen['there']} already there)" if seen["there"] else ""
            notify(f"push: {seen['done']} of {seen['total'] or '?'} layers{there}")

    return on_line


def publish(
    docker: DockerClient,
    local_tag: str,
    registry: str,
    home: Path,
    notify: Callable[[str], None],
) -> str:
    """Push the locally built `local_tag` to `registry` unless this content is there already;
    the reference machines pull."""
    from launcher.sync import atomic_write_text  # not at import: the spec imports this module

    ref = remote_ref(registry, local_tag)
    record_path = home / "registry" / "pushed.json"
    try:
        record = cast("dict[str, str]", json.loads(record_path.read_text()))
    except (OSError, ValueError):
        record = {}
    image_id = docker.image_id(local_tag)
    if image_id is None:
        raise TargetUnavailableError(f"image {local_tag} is not on this machine's docker engine")
    if record.get(ref) == image_id:
        notify(f"image unchanged: {ref} is already in the registry")
        return ref
    notify(f"pushing {local_tag} to {ref}")
    docker.tag(local_tag, ref)
    docker.push(ref, _layers_pushed(notify))
    record[ref] = image_id
    record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True))
    return ref
