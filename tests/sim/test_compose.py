"""compose.yaml through `launch sim up`: the emulators as containers on the host's engine, and
real `launch run`s on the containerised Vast emulator (its instance is a sibling container with
a real sshd, running the job's own image from the stack's registry) and Kaggle emulator.

Compose comes from `docker compose` (v2) or `docker-compose` (v1); when neither is installed the
fixture installs Debian's docker-compose, and fails saying what to do when it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
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


def _sim_containers() -> set[str]:
    """Every container an emulator or compose made (instances, kernels, the emulators)."""
    ids: set[str] = set()
    for label in ("launch.sim", "com.docker.compose.project"):
        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        ids.update(out.stdout.split())
    return ids


@pytest.fixture(scope="module")
def stack(
    compose: list[str], base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The emulators as the README brings them up: `launch sim up --with-registry` (compose,
    which the fixture above made sure of), on free ports; `launch sim down` afterwards must
    leave no container behind. Yields what `launch sim env` exports."""
    state = tmp_path_factory.mktemp("sim-state")
    env = dict(
        os.environ,
        LAUNCH_BASE_IMAGE=base_image,
        LAUNCH_SIM_STATE=str(state),
        LAUNCH_SIM_PROJECT=f"launchsim{os.getpid()}",
        LAUNCH_SIM_KERNEL_IMAGE=base_image,
    )
    for service in ("vast", "kaggle", "drive", "colab", "registry"):
        env[f"LAUNCH_SIM_{service.upper()}_PORT"] = str(_free_port())
    before = _sim_containers()
    up = subprocess.run(
        [*launch_cmd(), "sim", "up", "--with-registry"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "stack (compose)" in up.stdout, up.stdout
        for service in ("vast", "kaggle", "drive", "colab", "registry"):
            assert f"{service} " in up.stdout and "down" not in up.stdout, up.stdout
        exported = subprocess.run(
            ["bash", "-c", 'eval "$(launch sim env)" && env'],
            env=dict(env, PATH=f"{Path(launch_cmd()[0]).parent}:{env['PATH']}"),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        values = dict(
            line.split("=", 1) for line in exported.stdout.splitlines() if line.startswith(
                ("LAUNCH_", "VAST_", "KAGGLE_")
            )
        )
        yield {k: v for k, v in values.items() if not k.startswith("LAUNCH_SIM_")}
    finally:
        down = subprocess.run(
            [*launch_cmd(), "sim", "down"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert down.returncode == 0, down.stderr
        left = _sim_containers() - before
        assert not left, f"launch sim down left containers behind: {left}"
        status = subprocess.run([*launch_cmd(), "sim", "status"], env=env, capture_output=True)
        assert status.returncode == 3  # nothing recorded any more


def test_a_torch_workload_runs_from_its_image_on_the_composed_vast_emulator(
    stack: dict[str, str],
    project: Path,
    cpu_image_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The headline under compose: libcem (torch, numpy) built here, pushed to the stack's
    registry, pulled by an instance the containerised emulator starts as a sibling container,
    and run in the image's environment (its virtualenv) over SSH."""
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    assert stack["LAUNCH_REGISTRY"].endswith("/launch")
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/libcem.yaml", "--target", "vast", "--profile", "smoke",
         "--json"],
        cwd=project, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded" and float(rec["price_per_hour"]) > 0
    metrics = Path(rec["output_dir"], "outputs", "metrics.jsonl").read_text().splitlines()
    assert metrics and all("loss" in json.loads(m) for m in metrics)
    # the instance was destroyed: the emulator lists none
    listed = _get(f"{stack['LAUNCH_VAST_URL']}/api/v0/instances/?api_key={stack['VAST_API_KEY']}")
    assert listed["instances"] == []


def test_a_job_runs_on_the_containerised_kaggle_emulator(
    stack: dict[str, str], project: Path, tmp_path: Path
) -> None:
    """The kernel is a sibling container whose /kaggle folders are bind-mounted from the state
    directory: this only works because compose.yaml mounts it at the same path."""
    kaggle = stack["LAUNCH_KAGGLE_URL"]
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
