"""The `platform` fixture: each contract test runs once per platform (see platforms.py). The
emulators are started once per module and checked for leftovers when it ends."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim
from launcher.sim.kaggle import KaggleSim
from launcher.sim.kaggle.runner import INSTANCE_LABEL
from launcher.sim.vast import VastSim
from tests.contract import platforms
from tests.contract.platforms import KAGGLE_KEY, KAGGLE_USER, Platform

VAST_KEY = "contract-vast-key"
PLATFORMS = ["local-docker", "local-process", "vast", "kaggle", "colab"]


@pytest.fixture(scope="module")
def contract_vast(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VastSim]:
    sim = VastSim(
        api_key=VAST_KEY,
        loading_delay=0.5,
        running_delay=0.5,
        machines="docker",
        state_dir=tmp_path_factory.mktemp("vast-sim"),
    )
    with sim:
        yield sim
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=launch.sim.owner={sim.owner}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not left, f"VastSim.stop() left containers behind: {left}"


@pytest.fixture(scope="module")
def contract_kaggle(
    base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KaggleSim]:
    sim = KaggleSim(
        image=base_image,
        runtime="docker",
        users={KAGGLE_USER: KAGGLE_KEY},
        queue_seconds=1.0,
        grace_seconds=5,
        data_dir=tmp_path_factory.mktemp("kaggle-sim"),
    )
    with sim:
        yield sim
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={INSTANCE_LABEL}={sim.instance}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == [], f"containers left behind: {left}"


@pytest.fixture(scope="module")
def contract_drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriveSim]:
    with DriveSim(data_dir=tmp_path_factory.mktemp("drive-sim")) as sim:
        yield sim


@pytest.fixture(scope="module")
def contract_colab(
    contract_drive: DriveSim, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ColabSim]:
    """Notebooks run in kernels of this Python (it has ipykernel); every new one is opened."""
    sim = ColabSim(
        drive_url=contract_drive.url,
        data_dir=tmp_path_factory.mktemp("colab-sim"),
        sync_seconds=0.3,
        auto_open=True,
    )
    with sim:
        yield sim
    running = [s.id for s in sim.sessions.values() if s.state == "running"]
    assert running == [], f"sessions left running: {running}"


@pytest.fixture(params=PLATFORMS)
def platform(
    request: pytest.FixtureRequest, launch_home: Path, base_image: str, tmp_path: Path
) -> Platform:
    name = str(request.param)
    if name == "local-docker":
        request.getfixturevalue("docker_env")  # the job's image builds on the local base
        return platforms.local_docker(launch_home)
    if name == "local-process":
        return platforms.local_process(launch_home)
    if name == "vast":
        sim: VastSim = request.getfixturevalue("contract_vast")
        return platforms.vast(launch_home, sim, VAST_KEY, base_image)
    if name == "colab":
        drive: DriveSim = request.getfixturevalue("contract_drive")
        colab: ColabSim = request.getfixturevalue("contract_colab")
        return platforms.colab(launch_home, drive, colab, tmp_path / "drive-credentials.json")
    kaggle: KaggleSim = request.getfixturevalue("contract_kaggle")
    (tmp_path / "kaggle-config").mkdir()
    return platforms.kaggle(launch_home, kaggle, tmp_path / "kaggle-config")
