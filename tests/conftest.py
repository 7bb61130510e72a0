"""Shared fixtures. Every test gets its own LAUNCH_HOME; nothing touches the user's store.

Docker tests never skip silently: when no engine answers, the fixture runs
scripts/ensure-docker.sh (which installs and starts one where it can) and fails with what to do
when that is not possible. The local base image is built the same way (no registry is reachable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def launch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("launch-home")
    monkeypatch.setenv("LAUNCH_HOME", str(home))
    # downloaded inputs too: emulators number their dataset versions from 1 in every test
    monkeypatch.setenv("LAUNCH_INPUT_CACHE", str(home / "input-cache"))
    return home


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A docker engine that answers; started by scripts/ensure-docker.sh when needed."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    proc = subprocess.run(
        [str(REPO / "scripts" / "ensure-docker.sh")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(
            "these tests need a docker engine and scripts/ensure-docker.sh could not start one:\n"
            + proc.stderr
            + "\nstart dockerd (or run the tests as root on Debian so the script can install it)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The local base image tag (debootstrap + docker import; built once per machine)."""
    tag = os.environ.get("LAUNCH_TEST_BASE_IMAGE")
    if (
        tag
        and subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode
        == 0
    ):
        return tag
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-base-image.sh")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"could not build the local base image:\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def docker_env(base_image: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment for tests that build job images: BASE_IMAGE is the local base."""
    monkeypatch.setenv("LAUNCH_BASE_IMAGE", base_image)
    return base_image


@pytest.fixture(scope="session")
def wheel_index() -> Iterator[str | None]:
    """A find-links URL on 127.0.0.1 serving this machine's local wheels (the CPU torch build in
    /opt/wheels, or $LAUNCH_TEST_WHEEL_DIR), for image builds that run with host networking;
    None when the machine has no such folder (packages then come from the index alone)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = Path(os.environ.get("LAUNCH_TEST_WHEEL_DIR", "/opt/wheels"))
    if not folder.is_dir():
        yield None
        return

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    # A fixed port when free: the URL is a build argument, so a new port each session would
    # invalidate docker's layer cache and reinstall torch in every image that uses it.
    try:
        server = ThreadingHTTPServer(
            ("127.0.0.1", int(os.environ.get("LAUNCH_TEST_WHEEL_PORT", "38917"))), handler
        )
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cpu_image_env(
    base_image: str, wheel_index: str | None, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Environment for building a workload's image with its CPU requirements: BASE_IMAGE is the
    local base and pip inside the build also looks at the local wheels (a CPU torch)."""
    monkeypatch.setenv("LAUNCH_BASE_IMAGE", base_image)
    if wheel_index is not None:
        monkeypatch.setenv("LAUNCH_PIP_EXTRA_ARGS", f"--find-links {wheel_index}")
    return base_image


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repo's jobs/, workloads/ and images/, to run jobs from without touching
    the repo (run folders land in the copy)."""
    import shutil

    dest = tmp_path / "project"
    for part in ("jobs", "workloads", "images"):
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    yield dest


def launch_cmd() -> list[str]:
    """The real CLI, as a user runs it."""
    return [sys.executable, "-m", "launcher"]


def kit_path() -> str:
    """A folder holding launchkit.py alone, for PYTHONPATH when a test runs a workload directly
    (under launch the agent puts the bundle's copy there). Not launcher/ itself: its modules
    would become top-level names of the job."""
    import hashlib
    import shutil
    import tempfile

    src = REPO / "launcher" / "launchkit.py"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"launch-kit-{digest}"
    if not (folder / "launchkit.py").is_file():
        folder.mkdir(exist_ok=True)
        tmp = folder / f".launchkit.py.{os.getpid()}"
        shutil.copyfile(src, tmp)
        tmp.replace(folder / "launchkit.py")
    return str(folder)


def default_signals() -> None:
    """preexec_fn for children a test sends signals to: start them with the default
    dispositions, whatever the shell that started pytest ignores (`cmd &` ignores SIGINT)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def live_run(home: Path, run_id: str, target: str) -> None:
    """A run in the store at `home` whose launcher (this test process) is alive: `launch gc`
    must leave it and what it holds alone."""
    import socket

    from launcher.store import RunStore

    store = RunStore(home)
    store.create_run(
        run_id=run_id,
        job="hello",
        target=target,
        spec_digest="0" * 16,
        spec_path="jobs/hello.yaml",
        spec={},
        output_dir=str(home / "runs" / run_id),
    )
    store.update(run_id, supervisor_pid=os.getpid(), supervisor_host=socket.gethostname())
