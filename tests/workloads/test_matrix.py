"""The workload matrix: every job's smoke profile from its own image on every target, through the
real CLI and the emulators, its metrics and checkpoints brought home.

    local-docker   the job's image, built here with its CPU requirements
    local-process  a virtualenv from the image folder's requirements
    vast           the image pushed to a real registry, pulled by an emulated instance (a
                   container with a real sshd); the job is started over SSH, in the image's
                   environment
    kaggle         a kernel in the Kaggle emulator; the job's own image stands in for Kaggle's
                   (which has the frameworks installed), so the kernel keeps what it has
    colab          the Drive and Colab runtime emulators; the notebook runs in this Python

The default test command runs a slice: a torch job (libcem) and a TF job (violence) on vast and
on kaggle. `scripts/test-all` runs the whole matrix. Each case appends its timings to
$LAUNCH_MATRIX_OUT (JSON lines) when set, for bench/RESULTS.md; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim
from launcher.sim.kaggle import KaggleSim
from launcher.sim.vast import VastSim
from launcher.spec import load_spec
from tests.conftest import REPO, launch_cmd
from tests.contract import platforms
from tests.registry import registry

__all__ = ["registry"]  # the fixture, imported for pytest

pytestmark = pytest.mark.docker

JOBS = ["hello", "libcem", "violence", "svg_quality", "deepfake-train", "deepfake-generate",
        "handprep"]  # fmt: skip
TARGETS = ["local-docker", "local-process", "vast", "kaggle", "colab"]
# what `scripts/test` runs: a torch job and a TF job, from their images, where the image's
# environment must reach a job started over SSH (vast) and be lowered for a notebook (kaggle)
SLICE = {("libcem", "vast"), ("violence", "vast"), ("libcem", "kaggle"), ("violence", "kaggle")}
VAST_KEY = "matrix-vast-key"
RECORDS = {"deepfake-generate": "generation.jsonl"}  # it makes clips, not epochs


def _cases() -> list[Any]:
    return [
        pytest.param(job, target, marks=() if (job, target) in SLICE else pytest.mark.full)
        for job in JOBS
        for target in TARGETS
    ]


def _image_tag(job: str) -> str:
    """The job's image built here as a CPU smoke run builds it (its requirements-cpu.txt where
    it has one): what the Kaggle emulator's kernels run in, as Kaggle's image has its stack."""
    from launcher.images import ensure_image, requirements_for
    from launcher.targets.local.docker_client import DockerClient

    spec = load_spec(REPO / "jobs" / f"{job}.yaml", profile="smoke")
    assert spec.image is not None
    return ensure_image(
        DockerClient(), REPO, spec.image, requirements=requirements_for(spec, None)
    ).tag


@pytest.fixture
def where(
    request: pytest.FixtureRequest, tmp_path: Path, launch_home: Path, cpu_image_env: str
) -> Iterator[platforms.Platform]:
    """The target of this case, its emulators started for it and stopped after it."""
    job, target = request.node.callspec.params["job"], request.node.callspec.params["target"]
    if target == "local-docker":
        yield platforms.local_docker(launch_home)
    elif target == "local-process":
        yield platforms.local_process(launch_home)
    elif target == "vast":
        reg: str = request.getfixturevalue("registry")
        sim = VastSim(api_key=VAST_KEY, loading_delay=0.2, running_delay=0.2, machines="docker")
        with sim:
            p = platforms.vast(launch_home, sim, VAST_KEY, cpu_image_env)
            p.args = ["--target", "vast"]  # the job's own image, through the registry
            p.env["LAUNCH_REGISTRY"] = f"{reg}/matrix"
            yield p
            assert p.leftovers() == []
    elif target == "kaggle":
        sim = KaggleSim(
            image=_image_tag(job),
            runtime="docker",
            users={platforms.KAGGLE_USER: platforms.KAGGLE_KEY},
            queue_seconds=0.5,
            data_dir=tmp_path / "kaggle-sim",
        )
        with sim:
            (tmp_path / "kaggle-config").mkdir()
            p = platforms.kaggle(launch_home, sim, tmp_path / "kaggle-config")
            yield p
            assert p.leftovers() == []
    else:
        with DriveSim(data_dir=tmp_path / "drive-sim") as drive, ColabSim(
            drive_url=drive.url, data_dir=tmp_path / "colab-sim", sync_seconds=0.3, auto_open=True
        ) as runtime:
            yield platforms.colab(launch_home, drive, runtime, tmp_path / "colab.json")


@pytest.mark.parametrize(("job", "target"), _cases())
def test_the_smoke_run_comes_home(
    job: str, target: str, where: platforms.Platform, project: Path
) -> None:
    args = list(where.args)
    if target == "local-docker":  # the smoke profiles pick the process runtime for speed
        args += ["--set", "targets.local.runtime=docker"]
    started = time.monotonic()
    proc = subprocess.run(
        [*launch_cmd(), "run", f"jobs/{job}.yaml", "--profile", "smoke", *args, "--json"],
        cwd=project, env=where.env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded", rec
    out = Path(rec["output_dir"])
    # a JSON line per epoch (per clip for the generator), written as the job goes
    lines = out / "outputs" / RECORDS.get(job, "metrics.jsonl")
    metrics = [json.loads(x) for x in lines.read_text().split("\n") if x]
    assert metrics, f"no {lines.name} came home"
    checkpoints = [p for p in (out / "checkpoints").rglob("*") if p.is_file()]
    assert checkpoints or job == "handprep", "no checkpoint came home"  # handprep: a manifest
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a half-written file"
    phases = {p["status"]: p["seconds"] for p in rec["phases"]}
    setup = sum(phases.get(s, 0.0) for s in ("preparing", "provisioning", "uploading", "starting"))
    if os.environ.get("LAUNCH_MATRIX_OUT"):
        row = {"job": job, "target": target, "wall_s": round(wall, 1), "setup_s": round(setup, 1),
               "running_s": round(phases.get("running", 0.0), 1)}  # fmt: skip
        with open(os.environ["LAUNCH_MATRIX_OUT"], "a") as f:
            f.write(json.dumps(row) + "\n")
