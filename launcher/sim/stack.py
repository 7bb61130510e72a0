"""`launch sim up | down | status | env`: every emulator (and a local image registry) as one
stack on fixed 127.0.0.1 ports, so trying launch offline is three commands:

    launch sim up --with-registry
    eval "$(launch sim env)"
    launch run jobs/violence.yaml --target vast --profile smoke

Two runners, picked by `up` and remembered in `<state>/stack.json` for the other commands:
- compose (`docker compose` or `docker-compose`, whichever this machine has, over the repo's
  compose.yaml): the emulators in containers, their instances and kernels as sibling containers;
- process (no compose, or `--runner process`): each emulator is a detached
  `launch sim serve` of this Python, its log beside its state.
The registry is Debian's `docker-registry` run as a process in either case (no registry image
can be pulled here); Docker talks plain HTTP to a registry on 127.0.0.1 without configuration.

Nothing here imports the product: like the emulators, it only starts and stops them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

EMULATORS = ("vast", "kaggle", "drive", "colab")
DEFAULT_PORTS = {"vast": 8765, "kaggle": 8766, "drive": 8767, "colab": 8768, "registry": 5000}
# what answers once a service is ready (each emulator's own health route)
HEALTH = {
    "vast": "/api/v0/gpu_names/unique/",
    "kaggle": "/_emu/health",
    "drive": "/_sim/health",
    "colab": "/_sim/sessions",
    "registry": "/v2/",
}
REGISTRY_PREFIX = "launch"
COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose.yaml"
REGISTRY_CONFIG = """version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
"""


class StackError(RuntimeError):
    """The stack cannot be brought up or down; the message says why and what to do."""


@dataclass
class Stack:
    """What `up` started, as `down`, `status` and `env` find it."""

    runner: str  # "compose" | "process"
    state_dir: str
    ports: dict[str, int]
    project: str = "launch-sim"  # the compose project
    pids: dict[str, int] = field(default_factory=dict[str, int])  # process runner + registry
    skipped: dict[str, str] = field(default_factory=dict[str, str])  # service -> why

    @property
    def services(self) -> list[str]:
        return [s for s in self.ports if s not in self.skipped]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def save(self) -> None:
        path = _stack_file(Path(self.state_dir))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)


def state_dir() -> Path:
    return Path(os.environ.get("LAUNCH_SIM_STATE") or "/tmp/launch-sim")


def _stack_file(folder: Path) -> Path:
    return folder / "stack.json"


def load() -> Stack | None:
    """The stack `up` recorded under $LAUNCH_SIM_STATE, or None."""
    try:
        data = json.loads(_stack_file(state_dir()).read_text())
        return Stack(**data)
    except (OSError, ValueError, TypeError):
        return None


def ports() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        key = f"LAUNCH_SIM_{name.upper()}_PORT"
        raw = os.environ.get(key) or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StackError(f"{key}={raw!r}: expected a port number (1-65535)")
        out[name] = int(raw)
    return out


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if not with 200 (a registry's /v2/ may ask for a login)
    except OSError:
        return False


def _taken(port: int) -> bool:
    """Does something hold 127.0.0.1:`port` (listening or not, HTTP or not)?"""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when the plugin answers, else `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def _engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _has_image(ref: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", ref], capture_output=True)
    return done.returncode == 0


def up(
    *,
    runner: str = "auto",
    with_registry: bool = False,
    auto_open: bool = False,
    say: Callable[[str], None],
    wait_s: float = 120.0,
) -> Stack:
    """Start every emulator (and the registry), wait until each answers, record the stack."""
    folder = state_dir()
    current = load()
    if current is not None and any(answers(current.url(s) + HEALTH[s]) for s in current.services):
        raise StackError(
            f"a stack is already up ({current.runner}, state {folder}): "
            "`launch sim status` shows it, `launch sim down` stops it"
        )
    if current is not None:  # a stack that no longer answers: stop what is left of it first
        down_stack(current, say=lambda _m: None)
    wanted = ports()
    if not with_registry:
        del wanted["registry"]
    busy = [f"{s} ({p})" for s, p in wanted.items() if _taken(p)]
    if busy:
        raise StackError(
            f"something already listens on the port of {', '.join(busy)}: stop it, or move "
            "the stack with LAUNCH_SIM_<SERVICE>_PORT"
        )
    compose = compose_command()
    engine = _engine_answers()
    if runner == "auto":
        runner = "compose" if compose and engine and COMPOSE_FILE.is_file() else "process"
        if runner == "process":
            why = (
                "no docker engine answers"
                if not engine
                else "no compose here"
                if not compose
                else f"no {COMPOSE_FILE.name} beside the package"
            )
            say(f"running the emulators as processes ({why})")
    folder.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        runner=runner,
        state_dir=str(folder),
        ports=wanted,
        project=os.environ.get("LAUNCH_SIM_PROJECT") or "launch-sim",
    )
    try:
        if with_registry:
            stack.pids["registry"] = _start_registry(folder, wanted["registry"], say)
        if runner == "compose":
            if compose is None or not engine:
                raise StackError(
                    "--runner compose needs a docker engine and compose "
                    "(apt-get install docker-compose, or the compose plugin)"
                )
            _compose_up(compose, stack, auto_open, say)
        else:
            _processes_up(stack, engine, auto_open, say)
        stack.save()
        _wait(stack, wait_s, say)
    except BaseException:
        down_stack(stack, say=lambda _m: None)
        raise
    return stack


def _compose_env(stack: Stack, auto_open: bool) -> dict[str, str]:
    env = dict(os.environ, LAUNCH_SIM_STATE=stack.state_dir)
    for name in EMULATORS:
        env[f"LAUNCH_SIM_{name.upper()}_PORT"] = str(stack.ports[name])
    # no image can be pulled on an offline machine: build on the local base when it is here
    if not env.get("LAUNCH_BASE_IMAGE") and _has_image("launch-base:local"):
        env["LAUNCH_BASE_IMAGE"] = "launch-base:local"
    if auto_open:
        env["LAUNCH_SIM_AUTO_OPEN"] = "1"
    return env


def _compose_up(
    compose: list[str], stack: Stack, auto_open: bool, say: Callable[[str], None]
) -> None:
    say(f"starting the emulators with {' '.join(compose)} (the first time builds their image)")
    log = Path(stack.state_dir) / "compose-up.log"
    with log.open("w") as out:
        done = subprocess.run(
            [*compose, "-p", stack.project, "-f", str(COMPOSE_FILE), "up", "-d", "--build"],
            env=_compose_env(stack, auto_open),
            cwd=COMPOSE_FILE.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"compose up failed (log: {log}):\n{tail}")


def _processes_up(stack: Stack, engine: bool, auto_open: bool, say: Callable[[str], None]) -> None:
    for name in EMULATORS:
        if name == "colab" and not _has_module("nbclient"):
            stack.skipped[name] = "needs pip install 'launch[sim]' (nbclient, ipykernel)"
            say(f"colab: not started: {stack.skipped[name]}")
            continue
        args = ["--port", str(stack.ports[name]), "--state-dir", f"{stack.state_dir}/{name}"]
        if name == "colab":
            args += ["--drive-url", stack.url("drive")] + (["--auto-open"] if auto_open else [])
        if name == "vast" and not engine:
            args += ["--machines", "process"]
        stack.pids[name] = _spawn(
            [sys.executable, "-m", "launcher", "sim", "serve", name, *args],
            Path(stack.state_dir) / f"{name}.log",
        )


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _spawn(argv: list[str], log: Path) -> int:
    """A detached child in a session of its own: it outlives this command."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def _registry_binary() -> str:
    found = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y -qq --no-install-recommends docker-registry",
            shell=True,
            capture_output=True,
        )
        if Path("/usr/bin/docker-registry").exists():
            return "/usr/bin/docker-registry"
    raise StackError(
        "--with-registry needs an image registry: `apt-get install docker-registry` (Debian's "
        "CNCF distribution registry), or drop --with-registry and set LAUNCH_REGISTRY yourself"
    )


def _start_registry(folder: Path, port: int, say: Callable[[str], None]) -> int:
    binary = _registry_binary()
    root = folder / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    say(f"starting an image registry on 127.0.0.1:{port} (storage: {root / 'data'})")
    return _spawn([binary, "serve", str(config)], folder / "registry.log")


def _wait(stack: Stack, wait_s: float, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + wait_s
    pending = list(stack.services)
    while pending:
        pending = [s for s in pending if not answers(stack.url(s) + HEALTH[s])]
        if not pending:
            return
        dead = [s for s in pending if s in stack.pids and not _alive(stack.pids[s])]
        if dead or time.monotonic() > deadline:
            name = (dead or pending)[0]
            raise StackError(
                f"{name} {'exited' if dead else f'did not answer within {wait_s:.0f}s'}:\n"
                + _log_tail(stack, name)
            )
        time.sleep(0.3)
    say("every service answers")


def _log_tail(stack: Stack, name: str) -> str:
    if stack.runner == "compose" and name != "registry":
        compose = compose_command() or ["docker-compose"]
        done = subprocess.run(
            [*compose, "-p", stack.project, "-f", str(COMPOSE_FILE), "logs", "--tail", "15", name],
            capture_output=True,
            text=True,
            env=_compose_env(stack, False),
        )
        return done.stdout + done.stderr
    try:
        lines = (Path(stack.state_dir) / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-15:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours (spawned by this very process) is dead too
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def down(say: Callable[[str], None]) -> Stack | None:
    """Stop the recorded stack: compose down, or SIGTERM every process (each emulator removes
    the containers and processes it made on SIGTERM). None when no stack is recorded."""
    stack = load()
    if stack is None:
        return None
    down_stack(stack, say)
    return stack


def down_stack(stack: Stack, say: Callable[[str], None]) -> None:
    if stack.runner == "compose":
        compose = compose_command()
        if compose is not None:
            say("stopping the emulators' containers")
            subprocess.run(
                [*compose, "-p", stack.project, "-f", str(COMPOSE_FILE), "down", "-t", "30"],
                env=_compose_env(stack, False),
                cwd=COMPOSE_FILE.parent,
                capture_output=True,
            )
    for name, pid in stack.pids.items():
        _stop(pid)
        say(f"stopped {name}")
    try:
        _stack_file(Path(stack.state_dir)).unlink()
    except FileNotFoundError:
        pass


def _ours(pid: int) -> bool:
    """Is `pid` still one of the stack's (an emulator or the registry)? A stale stack file
    must not make `down` signal a process that took the number since."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (b"sim" in argv and b"serve" in argv) or any(b"docker-registry" in a for a in argv)


def _stop(pid: int, wait_s: float = 30.0) -> None:
    if not _ours(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch_env(service: str, url: str) -> dict[str, str]:
    """What `launch` needs to use the emulator at `url` (the credentials it accepts)."""
    if service == "vast":
        from launcher.sim.vast.sim import DEFAULT_API_KEY

        return {"LAUNCH_VAST_URL": url, "VAST_API_KEY": DEFAULT_API_KEY}
    if service == "kaggle":
        from launcher.sim.kaggle.sim import DEFAULT_USERS

        user, key = next(iter(DEFAULT_USERS.items()))
        return {"LAUNCH_KAGGLE_URL": url, "KAGGLE_USERNAME": user, "KAGGLE_KEY": key}
    if service == "drive":
        from launcher.sim.drive.sim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

        return {
            "LAUNCH_DRIVE_URL": url,
            "LAUNCH_COLAB_CLIENT_ID": DEFAULT_CLIENT_ID,
            "LAUNCH_COLAB_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        }
    if service == "colab":
        return {"LAUNCH_COLAB_URL": url}
    if service == "registry":
        return {"LAUNCH_REGISTRY": f"{url.removeprefix('http://')}/{REGISTRY_PREFIX}"}
    raise ValueError(service)


def exports(stack: Stack) -> str:
    """`export` lines for every service of the stack, for `eval "$(launch sim env)"`."""
    lines: list[str] = []
    for service in stack.services:
        pairs = launch_env(service, stack.url(service))
        lines.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs.items()))
    return "\n".join(lines)


def status_rows(stack: Stack) -> list[tuple[str, str, str]]:
    """(service, "up" | "down" | "skipped: why", URL) for each service of the stack."""
    rows: list[tuple[str, str, str]] = []
    for service in stack.ports:
        if service in stack.skipped:
            rows.append((service, f"not started: {stack.skipped[service]}", ""))
            continue
        url = stack.url(service)
        rows.append((service, "up" if answers(url + HEALTH[service]) else "down", url))
    return rows
