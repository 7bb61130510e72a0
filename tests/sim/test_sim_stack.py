"""`launch sim up --runner process`: every emulator and a registry as detached processes, found
again by `status`, `env` and `down` through the stack file (compose is tests/sim/test_compose.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import launch_cmd

SERVICES = ("vast", "kaggle", "drive", "colab", "registry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_up_env_status_down_as_processes(tmp_path: Path, docker_engine: None) -> None:
    env = dict(os.environ, LAUNCH_SIM_STATE=str(tmp_path / "state"))
    for service in SERVICES:
        env[f"LAUNCH_SIM_{service.upper()}_PORT"] = str(_free_port())

    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*launch_cmd(), "sim", *args], env=env, capture_output=True, text=True, timeout=180
        )

    up = launch("up", "--runner", "process", "--with-registry")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        stack = json.loads((tmp_path / "state" / "stack.json").read_text())
        assert stack["runner"] == "process" and set(stack["pids"]) == set(SERVICES)
        status = launch("status")
        assert status.returncode == 0
        for service in SERVICES:
            port = env[f"LAUNCH_SIM_{service.upper()}_PORT"]
            assert f"up    http://127.0.0.1:{port}" in status.stdout, status.stdout
        exports = launch("env").stdout
        assert f"LAUNCH_VAST_URL=http://127.0.0.1:{env['LAUNCH_SIM_VAST_PORT']}" in exports
        assert f"LAUNCH_REGISTRY=127.0.0.1:{env['LAUNCH_SIM_REGISTRY_PORT']}/launch" in exports
        assert "KAGGLE_KEY=" in exports and "LAUNCH_COLAB_URL=" in exports
        again = launch("up", "--runner", "process")
        assert again.returncode == 3 and "already up" in again.stderr, again.stderr
    finally:
        down = launch("down")
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in stack["pids"].values()), stack["pids"]
    gone = launch("status")
    assert gone.returncode == 3 and "launch sim up" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = dict(
            os.environ,
            LAUNCH_SIM_STATE=str(tmp_path / "state"),
            LAUNCH_SIM_VAST_PORT=str(busy.getsockname()[1]),
        )
        for service in SERVICES[1:]:
            env[f"LAUNCH_SIM_{service.upper()}_PORT"] = str(_free_port())
        proc = subprocess.run(
            [*launch_cmd(), "sim", "up", "--runner", "process"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "already listens on the port of vast" in proc.stderr
    assert not (tmp_path / "state" / "stack.json").exists()


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_a_bad_port_setting_is_one_line(tmp_path: Path, value: str) -> None:
    env = dict(os.environ, LAUNCH_SIM_STATE=str(tmp_path), LAUNCH_SIM_VAST_PORT=value)
    proc = subprocess.run(
        [*launch_cmd(), "sim", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3 and f"LAUNCH_SIM_VAST_PORT={value!r}" in proc.stderr, proc.stderr
