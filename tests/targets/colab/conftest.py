"""The Drive emulator and the Colab runtime emulator, and `launch` pointed at them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim

SECRET_NAME = "HELLO_TOKEN"
SECRET_VALUE = "s3cr3t-value-7f1d2c9e"  # what the user keeps in Colab's Secrets panel


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriveSim]:
    with DriveSim(data_dir=tmp_path_factory.mktemp("drive-sim")) as sim:
        yield sim


@pytest.fixture()
def colab(drive: DriveSim, tmp_path: Path) -> Iterator[ColabSim]:
    """A runtime where nothing opens by itself: the test opens each link, as the user would."""
    with ColabSim(
        drive_url=drive.url,
        data_dir=tmp_path / "colab-sim",
        sync_seconds=0.3,
        secrets={SECRET_NAME: SECRET_VALUE},
    ) as sim:
        yield sim


def colab_env(
    home: Path, drive: DriveSim, colab: ColabSim, *, creds: bool = True
) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_COLAB", "LAUNCH_DRIVE"))
    }
    env.update(
        LAUNCH_HOME=str(home),
        LAUNCH_DRIVE_URL=drive.url,
        LAUNCH_COLAB_URL=colab.url,
        LAUNCH_COLAB_POLL_S="0.2",
        LAUNCH_COLAB_RETRY_S="0.05",
    )
    if creds:
        path = home / "colab" / "credentials.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(drive.user_credentials()))
        path.chmod(0o600)
    return env


FAST = ["--target", "colab", "--set", "targets.colab.sync_seconds=0.5"]
