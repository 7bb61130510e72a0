"""`launch cancel` and `launch run` on Kaggle, end to end (the real CLI, the generated kernel in
docker on the sim): a cancel reaches the kernel's session (the sim refuses the kernel id, as
Kaggle does), the job saves a checkpoint and stops, and its outputs come home before its kernel
is deleted; a push whose answer is lost runs the job once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from launcher.sim.kaggle import KaggleSim
from tests.conftest import default_signals, launch_cmd
from tests.targets.kaggle.conftest import kernels_of, launch, metrics_epochs, record

SLOW = "run=python3 -m hello.train --epochs 60 --epoch-seconds 0.4"


def test_launch_cancel_reaches_the_kernel_which_saves_a_checkpoint_and_stops(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    out = project / "launch.out"
    with out.open("w") as f:
        run = subprocess.Popen(
            [*launch_cmd(), "run", "jobs/hello.yaml", "--target", "kaggle",
             "--set", SLOW, "--set", "limits.grace_seconds=5"],
            cwd=project, env=kaggle_env, stdout=f, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=default_signals,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "epoch 2/60" not in out.read_text():
            assert run.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        run_id: str = record(project, kaggle_env)["id"]
        cancel = launch(project, kaggle_env, "cancel", run_id, timeout=240)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert cancel.stdout.strip() == f"{run_id}: cancelled", cancel.stdout
        assert run.wait(180) == 130, out.read_text()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    rec: dict[str, Any] = record(project, kaggle_env, run_id)
    assert (rec["status"], rec["failure_reason"], rec["stop_reason"]) == (
        "cancelled",
        "user_cancelled",
        "cancel",
    )
    handle: dict[str, Any] = rec["handle"]["data"]
    [session] = [s for s in sim.kernels.sessions() if s.slug == handle["kernel_slug"]]
    # Kaggle's cancel, not its session cap nor a delete, ended the session: the handle holds
    # the session id the kernel said, which is not the kernel id SaveKernel answered
    assert (session.status, session.stop_reason) == ("CANCEL_ACKNOWLEDGED", "cancel")
    assert handle["kernel_session_id"] == session.id != handle["kernel_id"]
    run_dir = Path(rec["output_dir"])
    done = metrics_epochs(run_dir)
    assert done and done == list(range(1, len(done) + 1)) and len(done) < 60
    assert (run_dir / "checkpoints" / f"ckpt-epoch-{done[-1]:04d}.json").is_file()
    assert "checkpoint saved on SIGTERM" in (run_dir / "logs" / "job.log").read_text()
    assert handle["kernel_slug"] not in " ".join(kernels_of(sim))  # deleted once home


def test_a_push_whose_answer_is_lost_runs_the_job_once(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    sim.fail_next_push("lost", 502)
    proc = launch(project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle",
                  "--profile", "smoke")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "was lost (502" in proc.stderr and "not pushing again" in proc.stderr
    rec: dict[str, Any] = record(project, kaggle_env)
    assert rec["status"] == "succeeded"
    slug: str = rec["handle"]["data"]["kernel_slug"]
    assert len([s for s in sim.kernels.sessions() if s.slug == slug]) == 1
    assert metrics_epochs(Path(rec["output_dir"])) == [1, 2, 3]
    assert slug not in " ".join(kernels_of(sim))  # this run's kernel is gone (others' aside)
