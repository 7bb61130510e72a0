"""The platforms the contract suite runs on, each as the suite needs it: how to point `launch` at
it, what of a run could be left on it, and how it ends an attempt the way that platform does.

    local-docker   the job's image on the real docker engine
    local-process  the agent as a process in a virtualenv
    vast           the Vast emulator (instances are real containers with a real sshd)
    kaggle         the Kaggle emulator (kernels really run, in containers)
    colab          the Drive emulator and the Colab runtime emulator (the notebook really runs in
                   a Jupyter kernel; the sim opens each new notebook at once, as a user would)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim
from launcher.sim.kaggle import KaggleSim
from launcher.sim.kaggle.runner import INSTANCE_LABEL
from launcher.sim.vast import VastSim
from launcher.store import RunStore

# a key no file of the project holds by chance, so a leak search for it means something
KAGGLE_USER, KAGGLE_KEY = "alice", "kgl-contract-key-5e1d09a7c3"


@dataclass
class Platform:
    name: str
    env: dict[str, str]  # the launcher's environment
    args: list[str]  # --target and what it needs
    leftovers: Callable[[], list[str]]  # what of any run is still running or billed
    end_attempt: Callable[[dict[str, Any]], None]  # the platform ends the attempt (a record)
    early_phase: str  # where "cancel before the job runs" lands: preparing or provisioning
    never_runs_if_cancelled_early: bool = True  # a pushed Kaggle kernel starts by itself
    extra_files: dict[str, int] = field(default_factory=dict[str, int])  # path -> bytes


def _docker_ids(*filters: str) -> list[str]:
    args = ["docker", "ps", "-aq", *(x for f in filters for x in ("--filter", f))]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def _processes_under(root: Path) -> list[str]:
    """Processes whose command line or working folder lies under `root` (the launch home)."""
    found: list[str] = []
    needle = str(root)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (needle in cmd or cwd.startswith(needle)):
            found.append(f"process {proc.name}: {cmd.strip()[:120]}")
    return found


def _kill_groups(record: dict[str, Any]) -> None:
    """What a dead machine does to a local job: the agent and the workload die at once."""
    data = record["handle"]["data"]
    status = json.loads((Path(data["root"]) / "status.json").read_text())
    for pgid in (data["pid"], status["pid"]):
        try:
            os.killpg(int(pgid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def local_docker(home: Path) -> Platform:
    from launcher.targets.local.docker_client import LABEL_HOME, home_key

    return Platform(
        name="local-docker",
        env=dict(os.environ, LAUNCH_HOME=str(home)),
        args=["--target", "local", "--set", "targets.local.runtime=docker"],
        leftovers=lambda: _docker_ids(f"label={LABEL_HOME}={home_key(str(home))}"),
        end_attempt=lambda rec: subprocess.run(
            ["docker", "kill", rec["handle"]["data"]["container"]], check=True, capture_output=True
        ),
        early_phase="preparing",
        extra_files={"workloads/hello/weights.bin": 60_000_000},  # bundling takes a while
    )


def local_process(home: Path) -> Platform:
    return Platform(
        name="local-process",
        env=dict(os.environ, LAUNCH_HOME=str(home)),
        args=["--target", "local", "--set", "targets.local.runtime=process"],
        leftovers=lambda: _processes_under(home),
        end_attempt=_kill_groups,
        early_phase="preparing",
        extra_files={"workloads/hello/weights.bin": 60_000_000},
    )


def vast(home: Path, sim: VastSim, key: str, base_image: str) -> Platform:
    def leftovers() -> list[str]:
        rows = [f"instance {r['id']}" for r in sim.instances()]
        return rows + _docker_ids(f"label=launch.sim.owner={sim.owner}")

    return Platform(
        name="vast",
        env=dict(os.environ, LAUNCH_HOME=str(home), LAUNCH_VAST_URL=sim.url, VAST_API_KEY=key),
        args=["--target", "vast", "--set", f"targets.vast.image={base_image}"],
        leftovers=leftovers,
        end_attempt=lambda rec: sim.preempt(rec["handle"]["data"]["instance_id"]),
        early_phase="provisioning",
    )


def kaggle(home: Path, sim: KaggleSim, config_dir: Path) -> Platform:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP"))}
    env.update(
        LAUNCH_HOME=str(home),
        LAUNCH_KAGGLE_URL=sim.url,
        KAGGLE_USERNAME=KAGGLE_USER,
        KAGGLE_KEY=KAGGLE_KEY,
        KAGGLE_CONFIG_DIR=str(config_dir),
        LAUNCH_KAGGLE_POLL_S="0.2",  # ask the sim often: the tests are short
        LAUNCH_KAGGLE_RETRY_S="0.05",
    )

    def leftovers() -> list[str]:
        kernels = sim.kernels.list_kernels(KAGGLE_USER, {"group": "PROFILE"})["kernels"]
        running = _docker_ids(f"label={INSTANCE_LABEL}={sim.instance}", "status=running")
        return [f"kernel {k['ref']}" for k in kernels] + running

    return Platform(
        name="kaggle",
        env=env,
        args=["--target", "kaggle"],
        leftovers=leftovers,
        # Kaggle's session cap, reached now: SIGTERM, grace, the session ends
        end_attempt=lambda rec: sim.expire_session(
            KAGGLE_USER, rec["handle"]["data"]["kernel_slug"]
        ),
        early_phase="provisioning",
        never_runs_if_cancelled_early=False,
    )


def colab(home: Path, drive: DriveSim, runtime: ColabSim, credentials: Path) -> Platform:
    credentials.write_text(json.dumps(drive.user_credentials()))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_COLAB", "LAUNCH_DRIVE"))
    }
    env.update(
        LAUNCH_HOME=str(home),
        LAUNCH_DRIVE_URL=drive.url,
        LAUNCH_COLAB_URL=runtime.url,
        LAUNCH_COLAB_CREDENTIALS=str(credentials),
        LAUNCH_COLAB_POLL_S="0.2",
        LAUNCH_COLAB_RETRY_S="0.05",
    )

    def leftovers() -> list[str]:
        running = [f"session {s.id}" for s in runtime.sessions.values() if s.state == "running"]
        folders = [
            f"folder {f.title}"
            for f in drive.files(trashed=False)
            if f.mime_type == "application/vnd.google-apps.folder" and "-s" in f.title
        ]
        return running + folders

    def end_attempt(rec: dict[str, Any]) -> None:
        notebook = rec["handle"]["data"]["notebook_id"]
        [session] = [s for s in runtime.sessions.values() if s.notebook_id == notebook]
        runtime.disconnect(session.id)  # the tab closed: the VM goes, nothing gets to save

    return Platform(
        name="colab",
        env=env,
        args=[
            "--target",
            "colab",
            "--set",
            "targets.colab.sync_seconds=0.3",
            "--set",
            "targets.colab.lost_after_minutes=0.25",
        ],  # fmt: skip
        leftovers=leftovers,
        end_attempt=end_attempt,
        early_phase="provisioning",
        never_runs_if_cancelled_early=False,  # the sim opens the notebook as soon as it is there
    )


def unreleased(home: Path) -> list[str]:
    return [f"{r.kind} {r.native_id}" for r in RunStore(home).resources(unreleased_only=True)]
