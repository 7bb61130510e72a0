"""The fallback where no docker engine answers: an instance is a host process group behind a
real OpenSSH sshd of its own. Forced here with machines="process" (the same code path `auto`
takes without an engine), and reached with the real OpenSSH client."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.vast import VastSim
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY, Instances, api, show, ssh, ssh_ok, wait_status

# the shared fixtures, by name
ssh_bin = vast_fixtures.ssh_bin
ssh_key = vast_fixtures.ssh_key


@pytest.fixture(scope="module")
def host_sshd() -> str:
    """OpenSSH's server on the host; installed with apt when missing (never a skip)."""
    if os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd"
    proc = subprocess.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server",
        shell=True, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0 or not os.access("/usr/sbin/sshd", os.X_OK):
        pytest.fail(
            "the process fallback needs OpenSSH's sshd at /usr/sbin/sshd and apt-get could not "
            f"install openssh-server:\n{proc.stderr[-2000:]}",
            pytrace=False,
        )
    return "/usr/sbin/sshd"


@pytest.fixture
def process_sim(host_sshd: str, tmp_path: Path) -> Iterator[VastSim]:
    if os.geteuid() != 0:
        pytest.fail(
            "the process fallback logs in as root@: run these tests as root", pytrace=False
        )
    with VastSim(api_key=KEY, loading_delay=0.1, running_delay=0.1, machines="process",
                 state_dir=tmp_path / "state") as sim:  # fmt: skip
        yield sim


def test_process_instance_behind_a_real_sshd(
    process_sim: VastSim, ssh_bin: str, ssh_key: tuple[Path, str], tmp_path: Path
) -> None:
    assert process_sim.machines_kind == "process"
    key_path, pub = ssh_key
    made = Instances(process_sim)
    marker = tmp_path / "onstart-ran"
    iid = made.create(
        image="ignored:latest", env={"JOB_ID": "p-1"}, onstart=f'echo "ran $JOB_ID" > {marker}'
    )
    row = wait_status(process_sim, iid, "running")
    port = row["ssh_port"]
    assert row["ssh_host"] == "127.0.0.1" and port
    assert ssh(ssh_bin, key_path, port, "true").returncode != 0  # no key attached yet
    assert api(process_sim, "POST", f"/api/v0/instances/{iid}/ssh/", {"ssh_key": pub})[0] == 200
    assert ssh_ok(ssh_bin, key_path, port, "python3 -c 'print(6*7)'").strip() == "42"
    assert marker.read_text().strip() == "ran p-1"

    process_sim.drop_ssh(iid)
    assert ssh(ssh_bin, key_path, port, "true").returncode != 0
    process_sim.restore_ssh(iid)
    assert ssh_ok(ssh_bin, key_path, port, "echo back").strip() == "back"

    process_sim.preempt(iid)
    row = show(process_sim, iid)
    assert (row["actual_status"], row["intended_status"]) == ("stopped", "running")
    process_sim.resume(iid)
    wait_status(process_sim, iid, "running")
    process_sim.exit(iid)
    wait_status(process_sim, iid, "exited", timeout=10)

    machines_dir = tmp_path / "state" / "machines"
    assert any(machines_dir.iterdir())
    assert api(process_sim, "DELETE", f"/api/v0/instances/{iid}/", {})[0] == 200
    assert not any(machines_dir.iterdir()), "destroy left the machine's directory"
    assert shutil.which("ssh")


def test_without_a_docker_engine_auto_falls_back_to_processes(
    host_sshd: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from launcher.sim.vast.machines import MachineError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(MachineError, match="no docker engine answers"):
        VastSim(machines="docker").start()
    with VastSim(machines="auto") as sim:
        assert sim.machines_kind == "process"


def test_an_engine_this_emulator_cannot_drive_is_refused_not_replaced_by_processes(
    monkeypatch: pytest.MonkeyPatch, docker_engine: None
) -> None:
    """Under compose the engine's socket is mounted; without the docker SDK the emulator once
    fell back to processes in silence, and instances stopped running their image."""
    import sys

    from launcher.sim.vast.machines import MachineError

    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` fails: no SDK
    with pytest.raises(MachineError, match="SDK is not installed.*engine is here"):
        VastSim(machines="auto").start()
