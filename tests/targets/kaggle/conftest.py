"""Fixtures of the Kaggle target tests: the Kaggle sim (kernels really run, in docker on the local
base image), and `launch` run as a user runs it, pointed at the sim by LAUNCH_KAGGLE_URL with a
legacy key in KAGGLE_USERNAME/KAGGLE_KEY."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.kaggle import KaggleSim
from launcher.sim.kaggle.runner import INSTANCE_LABEL
from tests.conftest import launch_cmd

USER, KEY = "alice", "0123456789abcdef"


@pytest.fixture(scope="module")
def sim(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaggleSim]:
    s = KaggleSim(
        image=base_image,
        runtime="docker",
        queue_seconds=0.2,
        grace_seconds=3,
        data_dir=tmp_path_factory.mktemp("kaggle-sim"),
    )
    with s:
        yield s
    # nothing the tests started may outlive them
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={INSTANCE_LABEL}={s.instance}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == [], f"containers left behind: {left}"


@pytest.fixture
def kaggle_env(sim: KaggleSim, tmp_path: Path, launch_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP"))}
    (tmp_path / "kaggle-config").mkdir()
    env.update(
        LAUNCH_HOME=str(launch_home),
        LAUNCH_KAGGLE_URL=sim.url,
        KAGGLE_USERNAME=USER,
        KAGGLE_KEY=KEY,
        KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle-config"),
        LAUNCH_KAGGLE_POLL_S="0.2",  # ask the sim often: the tests are short
        LAUNCH_KAGGLE_RETRY_S="0.05",
    )
    return env


def launch(
    project: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def record(project: Path, env: dict[str, str], run: str = "last") -> dict:  # type: ignore[type-arg]
    proc = launch(project, env, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def kernels_of(sim: KaggleSim) -> list[str]:
    """The kernels alice has on the sim now."""
    return [k["ref"] for k in sim.kernels.list_kernels(USER, {"group": "PROFILE"})["kernels"]]


def metrics_epochs(run_dir: Path) -> list[int]:
    lines = (run_dir / "outputs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]
