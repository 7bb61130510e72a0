"""The fallback when no docker engine answers: an instance is a host process group behind a
real OpenSSH sshd of its own (own host key, own authorized_keys, own port on 127.0.0.1).

Honest limits: the "instance" shares the host's filesystem and user (ssh logs in as the user
the emulator runs as, so `root@` needs the emulator to run as root), and the image is ignored.
The docker backend is the faithful one; this one keeps the SSH wire path real without docker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from launcher.sim.vast.machines import BootRequest, MachineError, MachineState

MAIN = """trap 'exit 0' TERM INT
if [ -n "${1:-}" ]; then
  printf '%s\\n' "$1" > ./onstart.sh
  (sh ./onstart.sh 2>&1 | tee -a ./onstart.log) &
fi
sleep infinity &
wait $!
"""


@dataclass
class _Proc:
    dir: Path
    port: int
    req: BootRequest
    main: subprocess.Popen[bytes] | None = None
    sshd: subprocess.Popen[bytes] | None = None
    paused: bool = False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _signal_tree(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    for pid in reversed(_tree(proc.pid)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class ProcessMachines:
    kind = "process"

    def __init__(self, owner: str, *, sshd: str, workdir: Path | None = None) -> None:
        if not os.path.isabs(sshd) or not os.access(sshd, os.X_OK):
            raise MachineError(
                f"no usable OpenSSH server at {sshd} (apt-get install openssh-server)"
            )
        self.owner, self.sshd = owner, sshd
        self.workdir = workdir
        self._procs: dict[str, _Proc] = {}
        self._lock = threading.Lock()

    def _get(self, handle: str) -> _Proc:
        with self._lock:
            p = self._procs.get(handle)
        if p is None:
            raise MachineError(f"no such machine {handle}")
        return p

    def boot(self, req: BootRequest) -> str:
        base = self.workdir / "machines" if self.workdir else None
        if base:
            base.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"vast-sim-{self.owner}-{req.instance_id}-", dir=base))
        key = d / "ssh_host_ed25519_key"
        gen = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], capture_output=True
        )
        if gen.returncode != 0:
            raise MachineError(f"ssh-keygen failed: {gen.stderr.decode(errors='replace')}")
        (d / "authorized_keys").touch(mode=0o600)
        p = _Proc(dir=d, port=_free_port(), req=req)
        (d / "sshd_config").write_text(
            f"Port {p.port}\nListenAddress 127.0.0.1\nHostKey {key}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            "Subsystem sftp internal-sftp\n"
        )
        handle = f"proc-{req.instance_id}"
        with self._lock:
            self._procs[handle] = p
        self.start(handle)
        return handle

    def _start_sshd(self, p: _Proc) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        log = open(p.dir / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
        p.sshd = subprocess.Popen(
            [self.sshd, "-D", "-e", "-f", str(p.dir / "sshd_config")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()

    def ports(self, handle: str) -> dict[str, list[dict[str, str]]]:
        p = self._get(handle)
        if not p.req.ssh:
            return {}
        return {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(p.port)}]}

    def state(self, handle: str) -> MachineState:
        with self._lock:
            p = self._procs.get(handle)
        if p is None or p.main is None:
            return MachineState("gone")
        code = p.main.poll()
        if code is not None:
            return MachineState("exited", code)
        return MachineState("paused" if p.paused else "running")

    def start(self, handle: str) -> None:
        p = self._get(handle)
        if p.paused:
            for proc in (p.main, p.sshd):
                _signal_tree(proc, signal.SIGCONT)
            p.paused = False
            return
        if p.main is not None and p.main.poll() is None:
            return
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        env.update(p.req.env, HOME=str(p.dir))
        log = open(p.dir / "main.log", "ab")  # noqa: SIM115 - handed to the child
        if p.req.ssh:
            argv = ["/bin/sh", "-c", MAIN, "vast-boot", p.req.onstart or ""]
        else:
            argv = p.req.args or ["/bin/sh", "-c", "sleep infinity"]
        try:
            p.main = subprocess.Popen(
                argv, cwd=p.dir, env=env, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise MachineError(f"could not start {argv[0]}: {e}") from e
        finally:
            log.close()
        if p.req.ssh:
            self._start_sshd(p)

    def stop(self, handle: str) -> None:
        p = self._get(handle)
        if p.paused:
            self.start(handle)
        for proc in (p.sshd, p.main):
            _signal_tree(proc, signal.SIGTERM)
        for proc in (p.sshd, p.main):
            if proc is not None:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    _signal_tree(proc, signal.SIGKILL)
                    proc.wait(5)

    def pause(self, handle: str) -> None:
        p = self._get(handle)
        for proc in (p.main, p.sshd):
            _signal_tree(proc, signal.SIGSTOP)
        p.paused = True

    def kill(self, handle: str) -> None:
        p = self._get(handle)
        _signal_tree(p.sshd, signal.SIGKILL)
        _signal_tree(p.main, signal.SIGKILL)
        if p.main is not None:
            p.main.wait(5)

    def remove(self, handle: str) -> None:
        with self._lock:
            p = self._procs.pop(handle, None)
        if p is None:
            return
        for proc in (p.main, p.sshd):
            _signal_tree(proc, signal.SIGCONT)
            _signal_tree(proc, signal.SIGKILL)
            if proc is not None:
                proc.wait(5)
        shutil.rmtree(p.dir, ignore_errors=True)

    def add_key(self, handle: str, key: str) -> None:
        path = self._get(handle).dir / "authorized_keys"
        lines = path.read_text().splitlines()
        if key not in lines:
            with path.open("a") as f:
                f.write(key + "\n")

    def drop_ssh(self, handle: str) -> None:
        p = self._get(handle)
        _signal_tree(p.sshd, signal.SIGKILL)
        if p.sshd is not None:
            p.sshd.wait(5)

    def restore_ssh(self, handle: str) -> None:
        p = self._get(handle)
        if p.sshd is None or p.sshd.poll() is not None:
            self._start_sshd(p)

    def logs(self, handle: str, tail: int) -> str:
        path = self._get(handle).dir / "main.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")

    def remove_all(self) -> None:
        with self._lock:
            handles = list(self._procs)
        for h in handles:
            self.remove(h)
