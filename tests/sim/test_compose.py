"""compose.yaml: the emulators as containers on the host's engine, and a real `launch run` on the
containerised Vast emulator (its instance is a sibling container with a real sshd).

Compose comes from `docker compose` (v2) or `docker-compose` (v1); when neither is installed the
fixture installs Debian's docker-compose, and fails saying what to do when it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, launch_cmd

pytestmark = pytest.mark.docker


def _compose_cmd() -> list[str] | None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


@pytest.fixture(scope="session")
def compose(docker_engine: None) -> list[str]:
    cmd = _compose_cmd()
    if cmd is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "docker-compose"], capture_output=True, timeout=600
        )
        cmd = _compose_cmd()
    if cmd is None:
        pytest.fail(
            "these tests need docker compose: install the compose plugin or "
            "`apt-get install docker-compose` (the test installs it itself when run as root)",
            pytrace=False,
        )
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def stack(
    compose: list[str], base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """`compose up` of the emulators on free ports; `down` afterwards. Yields the Vast and
    Kaggle URLs (the Drive and Colab emulators are only checked to answer)."""
    vast_port, kaggle_port, drive_port, colab_port = (_free_port() for _ in range(4))
    env = dict(
        os.environ,
        LAUNCH_BASE_IMAGE=base_image,
        LAUNCH_SIM_VAST_PORT=str(vast_port),
        LAUNCH_SIM_KAGGLE_PORT=str(kaggle_port),
        LAUNCH_SIM_DRIVE_PORT=str(drive_port),
        LAUNCH_SIM_COLAB_PORT=str(colab_port),
        LAUNCH_SIM_STATE=str(tmp_path_factory.mktemp("sim-state")),
        LAUNCH_SIM_KERNEL_IMAGE=base_image,
    )
    project = ["-p", f"launchsim{os.getpid()}", "-f", str(REPO / "compose.yaml")]
    up = subprocess.run(
        [*compose, *project, "up", "-d", "--build"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        vast = f"http://127.0.0.1:{vast_port}"
        kaggle = f"http://127.0.0.1:{kaggle_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{vast}/api/v0/gpu_names/unique/")
                assert _get(f"{kaggle}/_emu/health")["ok"] is True
                assert _get(f"http://127.0.0.1:{drive_port}/_sim/health")["ok"] is True
                assert _get(f"http://127.0.0.1:{colab_port}/_sim/sessions") == []
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    logs = subprocess.run(
                        [*compose, *project, "logs"], env=env, capture_output=True, text=True
                    )
                    raise AssertionError(
                        f"the emulators never answered ({e}):\n{logs.stdout[-3000:]}"
                    ) from e
                time.sleep(0.5)
        yield vast, kaggle
    finally:
        down = subprocess.run(
            [*compose, *project, "down", "-t", "30"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr


def test_a_job_runs_on_the_containerised_vast_emulator(
    stack: tuple[str, str], project: Path, base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vast, _ = stack
    monkeypatch.setenv("LAUNCH_VAST_URL", vast)
    monkeypatch.setenv("VAST_API_KEY", "vast-sim-key")
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/hello.yaml", "--target", "vast", "--profile", "smoke",
         "--set", f"targets.vast.image={base_image}", "--json"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded" and float(rec["price_per_hour"]) > 0
    metrics = Path(rec["output_dir"], "outputs", "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]
    # the instance was destroyed: the emulator lists none
    listed = _get(f"{vast}/api/v0/instances/?api_key=vast-sim-key")
    assert listed["instances"] == []


def test_a_job_runs_on_the_containerised_kaggle_emulator(
    stack: tuple[str, str], project: Path, tmp_path: Path
) -> None:
    """The kernel is a sibling container whose /kaggle folders are bind-mounted from the state
    directory: this only works because compose.yaml mounts it at the same path."""
    _, kaggle = stack
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP"))}
    (tmp_path / "kaggle-config").mkdir()
    env.update(
        LAUNCH_KAGGLE_URL=kaggle, KAGGLE_USERNAME="alice", KAGGLE_KEY="0123456789abcdef",
        KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle-config"), LAUNCH_KAGGLE_POLL_S="0.5",
    )  # fmt: skip
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/hello.yaml", "--target", "kaggle", "--profile", "smoke",
         "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    metrics = Path(rec["output_dir"], "outputs", "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]
