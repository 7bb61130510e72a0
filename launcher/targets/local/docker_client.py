"""The one module that imports the docker SDK. Everything it raises is a LaunchError.

Docker errors are translated here, once (docker-py's own `create_api_error_from_http_exception`
idea): callers never see `docker.errors.*`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

# docker's ssh transport, which launch never uses (it talks to the local engine's socket),
# imports paramiko when it is installed (the vast extra), and paramiko imports invoke,
# unittest.mock and asyncio: about 0.15 s of every local run. Hide paramiko while docker loads;
# docker then simply has no ssh transport, and paramiko imports normally afterwards.
_HIDE_PARAMIKO = "paramiko" not in sys.modules
if _HIDE_PARAMIKO:
    sys.modules["paramiko"] = None  # type: ignore[assignment]  # makes `import paramiko` fail
try:
    import docker
    import docker.errors
    from docker.models.containers import Container
    from docker.types import DeviceRequest, Mount
finally:
    if _HIDE_PARAMIKO:
        del sys.modules["paramiko"]

from launcher.errors import SubmitError, TargetError, TargetUnavailableError  # noqa: E402
from launcher.image_config import ImageConfig  # noqa: E402

LABEL_RUN = "launch.run_id"
LABEL_HOME = "launch.home"  # which store created it: two LAUNCH_HOMEs never gc each other's

# Docker's container states -> our coarse view. Unknown states read as "unknown" (the caller
# treats that as still starting) rather than crashing.
NATIVE_STATES: Mapping[str, str] = {
    "created": "starting",
    "restarting": "starting",
    "running": "running",
    "paused": "running",
    "exited": "exited",
    "dead": "lost",
    "removing": "lost",
}


@contextmanager
def _translated(action: str) -> Generator[None]:
    try:
        yield
    except docker.errors.ImageNotFound as e:
        raise SubmitError(f"{action}: image not found ({e.explanation})") from e
    except docker.errors.APIError as e:
        raise TargetError(f"{action}: docker said: {e.explanation or e}") from e
    except docker.errors.DockerException as e:
        raise TargetUnavailableError(
            f"{action}: cannot talk to the docker engine ({e})",
            hint="start it (scripts/ensure-docker.sh) or use --set targets.local.runtime=process",
        ) from e


class DockerClient:
    """A thin, typed wrapper over the docker SDK for what the local target needs."""

    def __init__(self, timeout: int = 120) -> None:
        with _translated("connect"):
            self._client = docker.from_env(timeout=timeout)

    @staticmethod
    def engine_answers(timeout: int = 3) -> bool:
        """True when a docker engine answers a ping. Cheap; used to pick the runtime."""
        try:
            client = docker.from_env(timeout=timeout)
            try:
                return bool(client.ping())  # pyright: ignore[reportUnknownMemberType]
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means "no engine here"
            return False

    def close(self) -> None:
        self._client.close()

    def has_nvidia_runtime(self) -> bool:
        with _translated("docker info"):
            info: dict[str, Any] = self._client.info()  # pyright: ignore[reportUnknownMemberType]
        return "nvidia" in (info.get("Runtimes") or {}) or bool(info.get("CDISpecDirs"))

    # ---- images -----------------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        try:
            return self._client.images.get(ref).id
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            raise TargetError(f"inspect image {ref}: {e.explanation}") from e

    def image_config(self, ref: str) -> ImageConfig | None:
        """The `ENV` and `WORKDIR` of `ref` when this engine has it, else None."""
        try:
            attrs = self._client.images.get(ref).attrs
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            raise TargetError(f"inspect image {ref}: {e.explanation}") from e
        except docker.errors.DockerException as e:  # a timeout, a broken socket
            raise TargetError(f"inspect image {ref}: {e}") from e
        return ImageConfig.from_config(cast("dict[str, Any] | None", attrs.get("Config")))

    def tag(self, source: str, ref: str) -> None:
        """Give the local image `source` the name `ref` (registry/repository:tag)."""
        repository, _, tag = ref.rpartition(":")
        with _translated(f"tag {source} as {ref}"):
            self._client.images.get(source).tag(repository, tag=tag)  # pyright: ignore[reportUnknownMemberType]

    def push(self, ref: str, on_line: Callable[[str], None] = lambda _l: None) -> None:
        """Push `ref` to its registry; layers the registry has are not sent again."""
        repository, _, tag = ref.rpartition(":")
        with _translated(f"push {ref}"):
            stream = cast(
                "Iterable[dict[str, Any]]",
                self._client.api.push(  # pyright: ignore[reportUnknownMemberType]
                    repository, tag=tag, stream=True, decode=True
                ),
            )
            for entry in stream:
                if entry.get("error"):
                    raise TargetError(f"push {ref}: {entry['error']}")
                if entry.get("status"):
                    on_line(str(entry["status"]))

    def pull(self, ref: str) -> str:
        """Pull `ref` from its registry; the image id."""
        repository, _, tag = (
            ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
        )
        with _translated(f"pull {ref}"):
            image = self._client.images.pull(repository, tag=tag or "latest")
        return str(image.id)

    def run_once(self, image: str, command: list[str]) -> str:
        """Run `command` in a throwaway container of `image`; its stdout."""
        with _translated(f"run {' '.join(command)} in {image}"):
            out = self._client.containers.run(
                image, command, entrypoint=[], remove=True, stdout=True, stderr=False
            )
        return bytes(out).decode("utf-8", "replace")

    def build(
        self,
        context: Path,
        tag: str,
        buildargs: Mapping[str, str],
        on_line: Callable[[str], None],
    ) -> None:
        """Build with host networking (containers reach the package index through the host)."""
        tail: list[str] = []
        with _translated(f"build {tag}"):
            stream = self._client.api.build(
                path=str(context),
                tag=tag,
                buildargs=dict(buildargs),
                network_mode="host",
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = "\n".join(tail[-15:])
                    raise TargetError(f"image build {tag} failed: {chunk['error']}\n{detail}")
                text = str(chunk.get("stream", "")).rstrip()
                if text:
                    tail.append(text)
                    on_line(text)

    # ---- containers -------------------------------------------------------------------------

    def run(
        self,
        *,
        name: str,
        image: str,
        command: list[str],
        env: Mapping[str, str],
        mounts: list[tuple[str, str, bool]],
        labels: Mapping[str, str],
        gpus: int | str | None,
        user: str | None,
        workdir: str,
        shm_size: str | None = "1g",
    ) -> str:
        device_requests = None
        if gpus:
            count = -1 if gpus == "all" else int(gpus)
            device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        with _translated(f"start container {name}"):
            container = self._client.containers.run(
                image,
                command,
                name=name,
                detach=True,
                environment=dict(env),
                mounts=[
                    Mount(target=t, source=s, type="bind", read_only=ro) for s, t, ro in mounts
                ],
                labels=dict(labels),
                device_requests=device_requests,
                user=user,
                working_dir=workdir,
                shm_size=shm_size,
                # an init as PID 1 reaps the workload's orphans and forwards signals to the agent
                init=True,
                # host network: jobs reach package indexes and data the same way the host does;
                # a local job has nothing to isolate from its own machine.
                network_mode="host",
            )
        return str(container.id)

    def _get(self, name: str) -> Container | None:
        try:
            return self._client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as e:
            raise TargetError(f"inspect container {name}: {e.explanation}") from e

    def state(self, name: str) -> tuple[str, int | None, str]:
        """(coarse state, exit code, native status); ("missing", None, "") when gone."""
        container = self._get(name)
        if container is None:
            return "missing", None, ""
        st: dict[str, Any] = container.attrs.get("State", {})
        native = str(st.get("Status", ""))
        coarse = NATIVE_STATES.get(native, "unknown")
        code = st.get("ExitCode") if native == "exited" else None
        return coarse, code, native

    def signal(self, name: str, sig: str = "SIGTERM") -> None:
        container = self._get(name)
        if container is None:
            return
        try:
            container.kill(signal=sig)
        except docker.errors.APIError as e:
            # 409: not running any more; that is what we wanted.
            if e.status_code != 409:
                raise TargetError(f"signal {name}: {e.explanation}") from e

    def remove(self, name: str) -> None:
        container = self._get(name)
        if container is None:
            return
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as e:
            if e.status_code != 409:  # removal already in progress
                raise TargetError(f"remove {name}: {e.explanation}") from e

    def labelled(self, home: str) -> list[tuple[str, str, str]]:
        """(name, run id, status) of every container this launch home created."""
        with _translated("list containers"):
            found = self._client.containers.list(
                all=True, filters={"label": [f"{LABEL_HOME}={home_key(home)}"]}
            )
        out: list[tuple[str, str, str]] = []
        for c in found:
            labels = cast("dict[str, str]", c.labels)  # pyright: ignore[reportUnknownMemberType]
            out.append((c.name or "", labels.get(LABEL_RUN, ""), str(c.status)))
        return out


def home_key(home: str) -> str:
    """A short stable id for a LAUNCH_HOME, safe as a label value."""
    return hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:16]
