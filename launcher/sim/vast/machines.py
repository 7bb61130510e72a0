"""What an instance runs on: a docker container (preferred) or a host process behind a real sshd.

Vast's ssh launch mode ignores the image's ENTRYPOINT: it starts an sshd on port 22 and then
the `onstart` script. `BOOT` does the same inside the container, with host keys generated on
first boot so every instance has its own (the image's baked keys are removed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from launcher.sim.egress import BOOT_LINE as EGRESS_BOOT_LINE
from launcher.sim.egress import MOUNT as EGRESS_MOUNT
from launcher.sim.vast.query import as_dict, as_list

SSHD_FLAGS = "-o PermitRootLogin=prohibit-password -o PasswordAuthentication=no"

BOOT = f"""set -u
if [ ! -x /usr/sbin/sshd ]; then
  echo "vast-sim: no /usr/sbin/sshd in the image; ssh launch mode needs one" >&2
  exit 127
fi
if [ ! -e /etc/ssh/.vast-sim-hostkeys ]; then
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -A >/dev/null || exit 3
  touch /etc/ssh/.vast-sim-hostkeys
fi
mkdir -p /root/.ssh /run/sshd /var/log
chmod 700 /root/.ssh
touch /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
/usr/sbin/sshd {SSHD_FLAGS} || exit 4
{EGRESS_BOOT_LINE}
if [ -n "${{1:-}}" ]; then
  printf '%s\\n' "$1" > /root/onstart.sh
  SH=sh; [ -x /bin/bash ] && SH=/bin/bash
  ($SH /root/onstart.sh 2>&1 | tee -a /var/log/onstart.log) &
fi
trap 'exit 0' TERM INT
sleep infinity &
wait $!
"""

ADD_KEY = (
    "mkdir -p /root/.ssh && chmod 700 /root/.ssh && touch /root/.ssh/authorized_keys && "
    '(grep -qxF "$KEY" /root/.ssh/authorized_keys || printf "%s\\n" "$KEY" >> '
    "/root/.ssh/authorized_keys) && chmod 600 /root/.ssh/authorized_keys"
)
KILL_SSHD = (
    'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sshd ] && '
    "kill -9 ${p#/proc/} 2>/dev/null; done; true"
)
START_SSHD = f"mkdir -p /run/sshd && /usr/sbin/sshd {SSHD_FLAGS}"


class MachineError(RuntimeError):
    """The machine could not be created or driven; the message says why."""

    def __init__(self, message: str, *, sdk_missing: bool = False) -> None:
        super().__init__(message)
        self.sdk_missing = sdk_missing  # an engine may be there; this process cannot drive it


@dataclass
class BootRequest:
    instance_id: int
    image: str
    env: dict[str, str]
    onstart: str | None
    label: str | None
    extra_ports: list[str] = field(default_factory=list[str])  # "8080/tcp", from `-p 8080:8080`
    ssh: bool = True  # False for runtype "args": the image runs as-is, no sshd injected
    args: list[str] | None = None


@dataclass
class MachineState:
    status: str  # created | running | paused | exited | gone
    exit_code: int | None = None
    error: str | None = None


class Machines(Protocol):
    """The backend behind instances; every method may block on the engine."""

    kind: str

    def boot(self, req: BootRequest) -> str: ...  # returns a handle
    def ports(self, handle: str) -> dict[str, list[dict[str, str]]]: ...
    def state(self, handle: str) -> MachineState: ...
    def start(self, handle: str) -> None: ...
    def stop(self, handle: str) -> None: ...
    def pause(self, handle: str) -> None: ...
    def kill(self, handle: str) -> None: ...
    def remove(self, handle: str) -> None: ...
    def add_key(self, handle: str, key: str) -> None: ...
    def drop_ssh(self, handle: str) -> None: ...
    def restore_ssh(self, handle: str) -> None: ...
    def logs(self, handle: str, tail: int) -> str: ...
    def remove_all(self) -> None: ...


class DockerMachines:
    """Instances as containers on the local docker engine. An image named with a registry host
    (127.0.0.1:5000/..., ghcr.io/...) is pulled from it, as Vast does; a bare name must exist on
    the engine (the emulator's stand-in for images every host has)."""

    kind = "docker"

    def __init__(self, owner: str, egress: Path | None = None) -> None:
        self._egress = egress  # mounted at EGRESS_MOUNT: how instances reach this host
        try:
            import docker
            import docker.errors
        except ImportError as e:  # the `docker` extra is missing
            raise MachineError(
                "the docker SDK is not installed (pip install docker)", sdk_missing=True
            ) from e
        self._errors = docker.errors
        try:
            self._client: Any = docker.from_env(timeout=60)
            self._client.ping()
        except Exception as e:  # noqa: BLE001 - any transport failure means "no engine"
            raise MachineError(f"no docker engine answers: {e}") from e
        self.owner = owner

    def _get(self, handle: str) -> Any:
        return self._client.containers.get(handle)

    def boot(self, req: BootRequest) -> str:
        ports: dict[str, Any] = {}
        for p in req.extra_ports:
            ports[p] = ("127.0.0.1",)
        labels = {
            "launch.sim": "vast",
            "launch.sim.owner": self.owner,
            "launch.sim.instance": str(req.instance_id),
            "launch.sim.label": req.label or "",
        }
        if req.ssh:
            ports["22/tcp"] = ("127.0.0.1",)
            how: dict[str, Any] = {
                "entrypoint": ["/bin/sh", "-c", BOOT, "vast-boot"],
                "command": [req.onstart or ""],
            }
        else:
            how = {"command": req.args} if req.args else {}
        if _from_a_registry(req.image):
            # as a Vast host does: the image comes from its registry (a host never has it)
            repository, _, tag = req.image.rpartition(":")
            if "/" in tag or not repository:
                repository, tag = req.image, "latest"
            try:
                self._client.images.pull(repository, tag=tag)
            except self._errors.APIError as e:
                raise MachineError(f"image pull failed: {e.explanation or e}") from e
        try:
            c = self._client.containers.create(
                req.image,
                **how,
                environment=req.env,
                hostname=f"C.{req.instance_id}",
                name=f"vast-sim-{self.owner}-{req.instance_id}",
                labels=labels,
                ports=ports,
                volumes=(
                    {str(self._egress): {"bind": EGRESS_MOUNT, "mode": "ro"}}
                    if self._egress
                    else None
                ),
                detach=True,
            )
        except self._errors.ImageNotFound as e:
            raise MachineError(
                f"image {req.image!r} is not on the local engine (the emulator pulls only "
                "images named with a registry host)"
            ) from e
        except self._errors.APIError as e:
            raise MachineError(f"docker create failed: {e.explanation or e}") from e
        try:
            c.start()
        except self._errors.APIError as e:
            c.remove(force=True)
            raise MachineError(f"docker start failed: {e.explanation or e}") from e
        return str(c.id)

    def ports(self, handle: str) -> dict[str, list[dict[str, str]]]:
        c = self._get(handle)
        c.reload()
        raw = as_dict(as_dict(c.attrs.get("NetworkSettings")).get("Ports"))
        return {k: [{str(a): str(b) for a, b in as_dict(x).items()} for x in as_list(v)]
                for k, v in raw.items() if v}  # fmt: skip

    def state(self, handle: str) -> MachineState:
        try:
            c = self._get(handle)
            c.reload()
        except self._errors.NotFound:
            return MachineState("gone")
        st = c.attrs.get("State", {})
        return MachineState(str(c.status), st.get("ExitCode"), st.get("Error") or None)

    def start(self, handle: str) -> None:
        c = self._get(handle)
        c.reload()
        if c.status == "paused":
            c.unpause()
        elif c.status != "running":
            c.start()

    def stop(self, handle: str) -> None:
        c = self._get(handle)
        c.reload()
        if c.status == "paused":
            c.unpause()
        c.stop(timeout=5)

    def pause(self, handle: str) -> None:
        self._get(handle).pause()

    def kill(self, handle: str) -> None:
        self._get(handle).kill()

    def remove(self, handle: str) -> None:
        try:
            self._get(handle).remove(force=True)
        except self._errors.NotFound:
            pass
        except self._errors.APIError as e:
            if e.status_code != 409:  # "removal already in progress": wait for it to finish
                raise
            for _ in range(100):
                try:
                    self._get(handle)
                except self._errors.NotFound:
                    return
                time.sleep(0.1)
            raise

    def _exec(self, handle: str, script: str, env: dict[str, str] | None = None) -> str:
        try:
            res = self._get(handle).exec_run(["/bin/sh", "-c", script], environment=env or {})
        except self._errors.APIError as e:
            raise MachineError(f"docker exec failed: {e.explanation or e}") from e
        out = res.output.decode(errors="replace") if res.output else ""
        if res.exit_code != 0:
            raise MachineError(f"exec failed ({res.exit_code}): {out.strip()}")
        return out

    def add_key(self, handle: str, key: str) -> None:
        self._exec(handle, ADD_KEY, {"KEY": key})

    def drop_ssh(self, handle: str) -> None:
        self._exec(handle, KILL_SSHD)

    def restore_ssh(self, handle: str) -> None:
        self._exec(handle, START_SSHD)

    def logs(self, handle: str, tail: int) -> str:
        try:
            return self._get(handle).logs(tail=tail).decode(errors="replace")
        except self._errors.NotFound:
            return ""

    def remove_all(self) -> None:
        # a boot thread may be removing its own container right now (its instance was
        # destroyed while it booted): skip what vanishes, wait for removals in progress
        found = self._client.containers.list(
            all=True, filters={"label": [f"launch.sim.owner={self.owner}"]}, ignore_removed=True
        )
        for c in found:
            self.remove(str(c.id))


def _from_a_registry(image: str) -> bool:
    first = image.split("/", 1)[0]
    return "/" in image and ("." in first or ":" in first or first == "localhost")


def _engine_socket() -> str | None:
    """Where a docker engine listens, when one seems to: $DOCKER_HOST or the default socket."""
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host
    return "/var/run/docker.sock" if Path("/var/run/docker.sock").is_socket() else None


def pick_machines(
    owner: str, kind: str = "auto", workdir: Any = None, egress: Path | None = None
) -> Machines:
    """Docker when an engine answers; else host processes behind a real sshd (which reach this
    host's services without `egress`). An engine this process cannot drive (the SDK missing)
    is an error, not a reason to fall back: instances would silently stop running their image."""
    if kind in ("auto", "docker"):
        try:
            return DockerMachines(owner, egress)
        except MachineError as e:
            if kind == "docker":
                raise
            engine = _engine_socket()
            if engine is not None and e.sdk_missing:
                raise MachineError(
                    f"{e}: a docker engine is here ({engine}), and instances must be its "
                    "containers running the requested image"
                ) from e
            reason = str(e)
    else:
        reason = "asked for"
    from launcher.sim.vast.processes import ProcessMachines

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    try:
        subprocess.run([sshd, "-V"], capture_output=True, check=False)  # noqa: S603
    except OSError as e:
        raise MachineError(
            f"no docker engine ({reason}) and no OpenSSH server for the process fallback "
            "(apt-get install openssh-server)"
        ) from e
    return ProcessMachines(owner, sshd=sshd, workdir=workdir)
