"""Build `images/<name>/` into a tag named by the content it was built from.

The tag is `launch-<name>:<hash>` where the hash covers every file of the image folder, the build
arguments and the base image's id (when the base is local). The same inputs give the same tag, so a
build is skipped when the tag already exists; any change gives a new tag and a new build.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from launcher.errors import SpecError, SpecProblem, TargetError

if TYPE_CHECKING:
    from launcher.spec import JobSpec
    from launcher.targets.local.docker_client import DockerClient

BASE_IMAGE_ENV = "LAUNCH_BASE_IMAGE"
# Machine-level pip arguments for image builds (e.g. `--find-links http://127.0.0.1:8000/` where a
# CPU torch wheel is served): they describe this machine, not the job, so they come from the
# environment and never from the spec.
PIP_EXTRA_ARGS_ENV = "LAUNCH_PIP_EXTRA_ARGS"
DEFAULT_REQUIREMENTS = "requirements.txt"
# What an image folder installs for a job that asks for no GPU, when it ships one: a CPU smoke
# run of the violence job must not build (and push) the 7 GB CUDA image it never uses.
CPU_REQUIREMENTS = "requirements-cpu.txt"
BASE_IMAGE_HINT = (
    "no image can be pulled here? build a local base with scripts/build-base-image.sh and set "
    f"{BASE_IMAGE_ENV}=launch-base:local"
)


class ImageRef(BaseModel):
    name: str
    tag: str
    built: bool  # False when an existing build was reused
    seconds: float


def image_dir(project_root: Path, name: str) -> Path:
    path = project_root / "images" / name
    if not (path / "Dockerfile").is_file():
        known = sorted(p.parent.name for p in (project_root / "images").glob("*/Dockerfile"))
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        raise SpecError(
            [
                SpecProblem(
                    file=str(project_root / "images"),
                    line=None,
                    key="image",
                    message=f"no images/{name}/Dockerfile",
                    suggestion=close[0] if close else None,
                )
            ]
        )
    return path


def requirements_for(spec: JobSpec, chosen: str | None) -> str:
    """The requirements file of the job's image folder to install: the one the target's
    options name, else requirements-cpu.txt for a job without a GPU when the folder has one,
    else requirements.txt."""
    if chosen:
        return chosen
    cpu = spec.image_dir / CPU_REQUIREMENTS if spec.image_dir is not None else None
    if spec.resources.gpu.count == 0 and cpu is not None and cpu.is_file():
        return CPU_REQUIREMENTS
    return DEFAULT_REQUIREMENTS


def build_args(
    base_image: str | None = None, requirements: str = DEFAULT_REQUIREMENTS
) -> dict[str, str]:
    """BASE_IMAGE from the argument, else $LAUNCH_BASE_IMAGE, else the Dockerfile default;
    REQUIREMENTS when not the default file; PIP_EXTRA_ARGS from $LAUNCH_PIP_EXTRA_ARGS.

    Only arguments that differ from the Dockerfile defaults are passed, so an image that declares
    none of them builds as before and its content tag does not change."""
    args: dict[str, str] = {}
    base = base_image or os.environ.get(BASE_IMAGE_ENV)
    if base:
        args["BASE_IMAGE"] = base
    if requirements != DEFAULT_REQUIREMENTS:
        args["REQUIREMENTS"] = requirements
    extra = os.environ.get(PIP_EXTRA_ARGS_ENV, "").strip()
    if extra:
        args["PIP_EXTRA_ARGS"] = extra
    return args


def content_tag(name: str, folder: Path, args: dict[str, str], base_id: str | None) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for key in sorted(args):
        h.update(f"{key}={args[key]}\0".encode())
    h.update((base_id or "").encode())
    return f"launch-{name}:{h.hexdigest()[:16]}"


def build_steps(notify: Callable[[str], None]) -> Callable[[str], None]:
    """An `on_line` for builds that says each Dockerfile step as it starts ("Step 4/9 : RUN
    pip install ..."), so a build of minutes is not minutes of silence; the rest is noise."""

    def on_line(line: str) -> None:
        if line.startswith("Step "):
            notify(f"build {line if len(line) <= 110 else line[:107] + '...'}")

    return on_line


def ensure_image(
    client: DockerClient,
    project_root: Path,
    name: str,
    *,
    base_image: str | None = None,
    requirements: str = DEFAULT_REQUIREMENTS,
    on_line: Callable[[str], None] = lambda _line: None,
    on_build: Callable[[str], None] = lambda _tag: None,
    force: bool = False,
) -> ImageRef:
    """Build the image unless a build of exactly these inputs exists. Returns its tag."""
    started = time.monotonic()
    folder = image_dir(project_root, name)
    if requirements != DEFAULT_REQUIREMENTS and not (folder / requirements).is_file():
        raise SpecError(
            [
                SpecProblem(
                    file=str(folder),
                    line=None,
                    key="targets.local.requirements",
                    message=f"images/{name}/{requirements} does not exist",
                    suggestion=None,
                )
            ]
        )
    args = build_args(base_image, requirements)
    base_id = client.image_id(args["BASE_IMAGE"]) if "BASE_IMAGE" in args else None
    tag = content_tag(name, folder, args, base_id)
    if not force and client.image_id(tag) is not None:
        return ImageRef(name=name, tag=tag, built=False, seconds=time.monotonic() - started)
    on_build(tag)
    try:
        client.build(folder, tag, args, on_line)
    except TargetError as e:
        hint = BASE_IMAGE_HINT if "BASE_IMAGE" not in args else None
        raise TargetError(e.message, hint=hint) from e
    return ImageRef(name=name, tag=tag, built=True, seconds=time.monotonic() - started)
