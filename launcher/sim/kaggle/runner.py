"""Runs a kernel session for real: the pushed script in a container (or a local process).

Docker runtime: ``docker run`` of the configured image (``launch-base:local`` by default; never
pulled) with ``/kaggle/input/<slug>`` bound read-only from the emulated dataset versions,
``/kaggle/working`` as the working directory (collected as output when the session ends), no
network when the kernel has ``enable_internet: false``, and labels ``launch.sim=kaggle`` +
``launch.sim.instance=<sim id>`` so that ``stop()`` removes every container it started.

Process runtime (no docker engine answers): the script runs under this Python with its working
directory as the current directory. Literal ``/kaggle/...`` paths need the container; the process
gets the same tree under ``$KAGGLE_SIM_ROOT`` (``input/<slug>`` links, ``working``) instead.

A session past its cap (the kernel's ``sessionTimeoutSeconds``, the sim's session cap, or the
weekly accelerator quota) gets SIGTERM, ``grace_seconds`` to save its work, then SIGKILL, and ends
``ERROR`` with a failure message: the reference (§1.3 "Kernel status values") lists COMPLETE, ERROR
and CANCEL_ACKNOWLEDGED as the only terminal states, and CANCEL_ACKNOWLEDGED answers a user's
cancel, so a timeout is an ERROR [the exact wording of Kaggle's message is unverified].
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.sim import egress
from launcher.sim.kaggle import user_secrets

QUEUED = "QUEUED"
RUNNING = "RUNNING"
COMPLETE = "COMPLETE"
ERROR = "ERROR"
CANCEL_REQUESTED = "CANCEL_REQUESTED"
CANCEL_ACKNOWLEDGED = "CANCEL_ACKNOWLEDGED"
TERMINAL = frozenset({COMPLETE, ERROR, CANCEL_ACKNOWLEDGED})

LABEL = "launch.sim"
LABEL_VALUE = "kaggle"
INSTANCE_LABEL = "launch.sim.instance"


@dataclass
class Session:
    id: int
    owner: str
    slug: str
    version: int
    text: str
    language: str
    kernel_type: str
    accelerator: str | None
    timeout_seconds: float | None
    enable_internet: bool
    inputs: list[tuple[str, Path]]
    dir: Path
    status: str = QUEUED
    failure_message: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    stop_reason: str | None = None  # "cancel" | "timeout" | "quota" once a stop was decided
    inject_failure: str | None = None
    secrets: dict[str, str] = field(default_factory=dict[str, str])
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def working(self) -> Path:
        return self.dir / "working"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def running_seconds(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or now or time.time()) - self.started

    def set_status(self, status: str, message: str | None = None) -> None:
        with self.changed:
            self.status = status
            if message:
                self.failure_message = message
            self.changed.notify_all()

    def append_log(self, stream: str, data: str) -> None:
        with self.changed:
            t = round(time.time() - (self.started or self.created), 3)
            self.log.append({"stream_name": stream, "time": t, "data": data})
            self.changed.notify_all()

    def request_stop(self, reason: str) -> None:
        with self.changed:
            if self.stop_reason is None and not self.terminal:
                self.stop_reason = reason
                if reason == "cancel":
                    self.status = CANCEL_REQUESTED
            self.changed.notify_all()


@dataclass
class Limits:
    """Read at every tick, so a cap or quota changed mid-run applies to running sessions."""

    session_seconds: Callable[[], float]
    grace_seconds: Callable[[], float]
    queue_seconds: Callable[[], float]
    quota_left: Callable[[Session], float]  # seconds of the session's accelerator quota left


def script_text(session: Session) -> str:
    """A notebook runs its code cells in order (shell and magic lines are commented out)."""
    if session.kernel_type != "notebook":
        return session.text
    nb: dict[str, Any] = json.loads(session.text)
    cells: list[dict[str, Any]] = nb.get("cells", [])
    parts: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        raw: Any = cell.get("source", "")
        chunks: list[Any] = raw if isinstance(raw, list) else [raw]  # pyright: ignore[reportUnknownVariableType]
        src = "".join(str(x) for x in chunks)
        lines = [
            ("# " + ln) if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


class Runner:
    def __init__(
        self,
        *,
        runtime: str,
        image: str,
        instance: str,
        limits: Limits,
        egress: Path | None = None,
    ) -> None:
        self.egress = egress  # kernels with internet reach this host's services through it
        self.runtime = runtime  # "docker" | "process"
        self.image = image
        self.instance = instance
        self.limits = limits
        self._threads: list[threading.Thread] = []

    def start(self, session: Session, on_end: Callable[[Session], None]) -> None:
        t = threading.Thread(
            target=self._run, args=(session, on_end), name=f"kaggle-sim-{session.id}", daemon=True
        )
        self._threads.append(t)
        t.start()

    def join(self, timeout: float) -> None:
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.time()))

    # -- one session ------------------------------------------------------------------------

    def _run(self, s: Session, on_end: Callable[[Session], None]) -> None:
        try:
            self._queue(s)
            if s.stop_reason is None:
                self._execute(s)
        except Exception as e:  # noqa: BLE001 - a sim bug must end the session, not hang it
            s.append_log("stderr", f"kaggle sim: internal error: {e!r}\n")
            s.stop_reason = s.stop_reason or "error"
            s.exit_code = s.exit_code if s.exit_code is not None else -1
        finally:
            s.ended = time.time()
            self._finish(s)
            on_end(s)

    def _queue(self, s: Session) -> None:
        deadline = s.created + self.limits.queue_seconds()
        with s.changed:
            while s.stop_reason is None and time.time() < deadline:
                s.changed.wait(max(0.01, deadline - time.time()))

    def _execute(self, s: Session) -> None:
        s.working.mkdir(parents=True, exist_ok=True)
        src = s.dir / "src"
        src.mkdir(parents=True, exist_ok=True)
        if s.inject_failure is not None:
            code = f"import sys\nsys.exit({s.inject_failure!r})\n"
        elif s.language not in ("python", ""):
            code = f"import sys\nsys.exit('kaggle sim runs python kernels, not {s.language}')\n"
        else:
            code = script_text(s)
        script = src / "__script__.py"
        script.write_text(code, encoding="utf-8")
        user_secrets.write(s.dir / "lib", s.secrets)
        argv, env, cwd = self._command(s, script)
        s.started = time.time()
        s.set_status(RUNNING)
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=_pump, args=(proc.stdout, "stdout", s), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, "stderr", s), daemon=True),
        ]
        for r in readers:
            r.start()
        self._supervise(s, proc)
        for r in readers:
            r.join(5)

    def _supervise(self, s: Session, proc: subprocess.Popen[bytes]) -> None:
        termed_at: float | None = None
        delivered = False
        while True:
            try:
                s.exit_code = proc.wait(timeout=0.1)
                return
            except subprocess.TimeoutExpired:
                pass
            if termed_at is None:
                reason = self._over_limit(s)
                if reason is not None:
                    s.request_stop(reason)
                if s.stop_reason is not None:
                    termed_at = time.time()
            if termed_at is None or termed_at == float("inf"):
                continue
            if time.time() - termed_at > self.limits.grace_seconds():
                self._signal(s, proc, signal.SIGKILL)
                termed_at = float("inf")  # killed; wait for the exit
            elif not delivered:
                # a container still being created misses the signal: send it until it lands
                delivered = self._signal(s, proc, signal.SIGTERM)

    def _over_limit(self, s: Session) -> str | None:
        ran = s.running_seconds()
        cap = self.limits.session_seconds()
        if s.timeout_seconds:
            cap = min(cap, s.timeout_seconds)
        if ran >= cap:
            return "timeout"
        if s.accelerator is not None and self.limits.quota_left(s) <= 0:
            return "quota"
        return None

    def _signal(self, s: Session, proc: subprocess.Popen[bytes], sig: signal.Signals) -> bool:
        """Send ``sig`` to the kernel; True when it was delivered."""
        if self.runtime == "docker":
            name = self.container_name(s)
            if sig == signal.SIGKILL:  # remove it too, in case `docker run` is still creating it
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
                proc.kill()
                return True
            kill = ["docker", "kill", "--signal", sig.name, name]
            return subprocess.run(kill, capture_output=True).returncode == 0
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _finish(self, s: Session) -> None:
        reason = s.stop_reason
        if reason == "cancel":
            s.set_status(CANCEL_ACKNOWLEDGED)
        elif reason == "timeout":
            cap = self.limits.session_seconds()
            if s.timeout_seconds:
                cap = min(cap, s.timeout_seconds)
            s.set_status(
                ERROR, f"Session timed out: the session limit of {cap:g} seconds was reached"
            )
        elif reason == "quota":
            s.set_status(ERROR, f"Your weekly {(s.accelerator or '').upper()} quota is used up")
        elif s.exit_code == 0:
            s.set_status(COMPLETE)
        elif s.inject_failure is not None:
            s.set_status(ERROR, s.inject_failure)
        elif self.runtime == "docker" and s.exit_code == 125:  # `docker run` itself failed
            errors = [e["data"].strip() for e in s.log if e["stream_name"] == "stderr"]
            why = errors[0] if errors else "no message"
            s.set_status(ERROR, f"kaggle sim: docker could not start the kernel: {why}")
        else:
            s.set_status(ERROR, f"The kernel's script exited with code {s.exit_code}")

    # -- commands ---------------------------------------------------------------------------

    def container_name(self, s: Session) -> str:
        return f"kaggle-sim-{self.instance}-{s.id}"

    def _command(self, s: Session, script: Path) -> tuple[list[str], dict[str, str], Path]:
        kaggle_env = {
            # the one place a kernel learns its session id (what CancelKernelSession takes):
            # third-party code reads it from this name's digits; the name's shape is
            # unverified, so the sim's only promises that its last all-digit part is the id
            "KAGGLE_CONTAINER_NAME": f"kaggle_sim{self.instance}-{s.id}",
            "KAGGLE_KERNEL_RUN_TYPE": "Batch",
            "KAGGLE_USER_SECRETS_TOKEN": f"kaggle-sim-session-{s.id}",
            "PYTHONUNBUFFERED": "1",
        }
        lib = s.dir / "lib"
        if self.runtime == "docker":
            argv = [
                "docker", "run", "--rm", "--pull", "never", "--init",
                "--name", self.container_name(s),
                "--label", f"{LABEL}={LABEL_VALUE}",
                "--label", f"{INSTANCE_LABEL}={self.instance}",
                "--label", f"launch.sim.session={s.id}",
                "-v", f"{s.working}:/kaggle/working",
                "-v", f"{script.parent}:/kaggle/src:ro",
                "-v", f"{lib}:/kaggle/lib:ro",
                "-e", "PYTHONPATH=/kaggle/lib",
                "-e", f"KAGGLE_SIM_SECRETS_FILE=/kaggle/lib/{user_secrets.FILE}",
                "-w", "/kaggle/working",
            ]  # fmt: skip
            for name, path in s.inputs:
                argv += ["-v", f"{path}:/kaggle/input/{name}:ro"]
            if not s.enable_internet:
                argv += ["--network", "none"]
            elif self.egress is not None:  # "the internet": this host's allowed services
                argv += ["-v", f"{self.egress}:{egress.MOUNT}:ro"]
            if os.getuid() != 0:
                argv += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
            for k, v in kaggle_env.items():
                argv += ["-e", f"{k}={v}"]
            shim = egress.BOOT_LINE + '; exec "$(command -v python3 || command -v python)" "$0"'
            argv += [self.image, "sh", "-c", shim, f"/kaggle/src/{script.name}"]
            return argv, dict(os.environ), s.working
        root = s.dir / "kaggle"
        (root / "input").mkdir(parents=True, exist_ok=True)
        for name, path in s.inputs:
            link = root / "input" / name
            if not link.exists():
                link.symlink_to(path, target_is_directory=True)
        working = root / "working"
        if not working.exists():
            working.symlink_to(s.working, target_is_directory=True)
        path = os.pathsep.join(p for p in (str(lib), os.environ.get("PYTHONPATH", "")) if p)
        env = {
            **os.environ,
            **kaggle_env,
            "KAGGLE_SIM_ROOT": str(root),
            "PYTHONPATH": path,
            "KAGGLE_SIM_SECRETS_FILE": str(lib / user_secrets.FILE),
        }
        return [sys.executable, str(script)], env, s.working


def _pump(stream: IO[bytes], name: str, s: Session) -> None:
    for line in iter(stream.readline, b""):
        s.append_log(name, line.decode("utf-8", "replace"))
    stream.close()


def docker_answers() -> bool:
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def remove_containers(instance: str) -> None:
    """Remove every container this sim instance started (running or not)."""
    try:
        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={INSTANCE_LABEL}={instance}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        if out:
            subprocess.run(["docker", "rm", "-f", *out], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass
