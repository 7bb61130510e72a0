"""How a Kaggle run fails: a rejected push (the kaggle CLI would exit 0), a failed kernel, a 429
storm, missing credentials, chaining turned off. Each ends with one clear message, a non-zero exit
without a traceback, a truthful record, and nothing left on the platform."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from launcher.sim.kaggle import KaggleSim
from launcher.store import RunStore
from launcher.store.identity import store_key
from tests.targets.kaggle.conftest import USER, kernels_of, launch, metrics_epochs, record

SMOKE = ("run", "jobs/hello.yaml", "--target", "kaggle", "--profile", "smoke")


def released(home: Path, run_id: str) -> bool:
    rows = RunStore(home).resources(run_id=run_id)
    return bool(rows) and all(r.state.value == "released" for r in rows)


def test_a_rejected_push_is_a_clear_error_not_a_silent_success(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path
) -> None:
    sim.reject_next_push("Maximum batch GPU session count of 2 reached")
    proc = launch(project, kaggle_env, *SMOKE)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert (
        "Kaggle rejected the kernel push: Maximum batch GPU session count of 2 reached"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    rec = record(project, kaggle_env)
    assert (rec["status"], rec["failure_reason"]) == ("failed", "submit_failed")
    assert "Maximum batch GPU session count" in rec["message"]
    assert released(launch_home, rec["id"])
    assert kernels_of(sim) == []


def test_a_failed_kernel_ends_the_run_failed_with_kaggles_reason(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path
) -> None:
    sim.fail_next_kernel("CUDA error: out of memory")
    proc = launch(project, kaggle_env, *SMOKE)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "CUDA error: out of memory" in proc.stderr
    assert "Traceback" not in proc.stderr
    rec = record(project, kaggle_env)
    assert rec["status"] == "failed"
    assert "ended ERROR: CUDA error: out of memory" in rec["message"]
    assert released(launch_home, rec["id"])
    assert kernels_of(sim) == []


def test_a_429_storm_gives_up_after_retries_with_a_clear_message(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path
) -> None:
    sim.fail_next_requests(1000, 429, retry_after=0.02, method="SaveKernel")
    try:
        proc = launch(project, kaggle_env, *SMOKE)
    finally:
        sim.fail_next_requests(0)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Kaggle kernels.SaveKernel failed after 6 tries: 429 Too Many Requests" in proc.stderr
    assert "Traceback" not in proc.stderr
    rec = record(project, kaggle_env)
    assert (rec["status"], rec["failure_reason"]) == ("failed", "submit_failed")
    assert "429" in rec["message"]
    assert released(launch_home, rec["id"])
    assert kernels_of(sim) == []


def test_without_chaining_a_job_longer_than_a_session_stops_at_the_cap_with_a_checkpoint(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    proc = launch(
        project,
        kaggle_env,
        "run",
        "jobs/hello.yaml",
        "--target",
        "kaggle",
        "--set",
        "run=python3 -m hello.train --epochs 40 --epoch-seconds 0.5",
        "--set",
        "limits.grace_seconds=1",
        "--set",
        "targets.kaggle.session_hours=0.0017",
        "--set",
        "targets.kaggle.allow_chaining=false",
    )
    assert proc.returncode == 6, proc.stdout + proc.stderr
    rec = record(project, kaggle_env)
    assert (rec["status"], rec["failure_reason"]) == ("failed", "timed_out")
    assert "allow_chaining is off" in rec["message"]
    assert any(Path(rec["output_dir"], "checkpoints").glob("ckpt-epoch-*.json"))
    assert kernels_of(sim) == []


def test_secrets_reach_the_job_through_kaggle_and_never_appear_in_what_was_pushed(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path
) -> None:
    value = "s3cr3t-" + os.urandom(8).hex()
    sim.set_secret("HELLO_TOKEN", value)
    env = dict(kaggle_env, HELLO_TOKEN=value)  # even when the launcher's shell has it
    run = (
        'python3 -c "import hashlib, os; '
        "print('token-sha', hashlib.sha256(os.environ['HELLO_TOKEN'].encode()).hexdigest())\""
    )
    proc = launch(
        project, env, "run", "jobs/hello.yaml", "--target", "kaggle",
        "--set", f"run={run}", "--set", "secrets=[HELLO_TOKEN]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Add-ons -> Secrets" in proc.stderr  # explained once
    assert "token-sha " + hashlib.sha256(value.encode()).hexdigest() in proc.stdout
    session = sim.kernels.sessions()[-1]
    assert value not in session.text  # the kernel source
    secret_file = session.dir / "lib" / "user-secrets.json"  # the sim's own secret store
    for path in [*sim.data_dir.rglob("*"), *launch_home.rglob("*")]:
        if path.is_file() and path != secret_file:
            assert value.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    again = launch(
        project, env, "run", "jobs/hello.yaml", "--target", "kaggle",
        "--set", f"run={run}", "--set", "secrets=[HELLO_TOKEN]",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "Add-ons -> Secrets" not in again.stderr


def test_missing_credentials_say_where_to_create_them(
    project: Path, kaggle_env: dict[str, str]
) -> None:
    env = {k: v for k, v in kaggle_env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
    env["HOME"] = str(project)  # no ~/.kaggle either
    proc = launch(project, env, *SMOKE)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no Kaggle credentials found" in proc.stderr
    assert "https://www.kaggle.com/settings" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert USER  # the sim was never asked for anything


def test_a_gpu_run_stopped_by_the_weekly_quota_keeps_its_checkpoint_and_says_why(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    sim.set_quota(gpu_seconds=100, gpu_used=95)  # 5 s of GPU left this week
    try:
        proc = launch(
            project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle",
            "--set", "run=python3 -m hello.train --epochs 40 --epoch-seconds 0.5",
            "--set", "resources.gpu.count=1", "--set", "limits.grace_seconds=1",
        )  # fmt: skip
    finally:
        sim.set_quota(gpu_seconds=30 * 3600, gpu_used=0)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    rec = record(project, kaggle_env)
    assert (rec["status"], rec["failure_reason"]) == ("failed", "no_capacity")
    assert "Your weekly GPU quota is used up" in rec["message"]
    assert "could not start attempt 2: the weekly Kaggle quota is used up" in rec["message"]
    assert "--resume-from" in rec["message"]
    assert "Kaggle NvidiaTeslaT4 quota used by session 1" in proc.stderr
    # the quota it used is part of the record: the 5 s that were left, and not much more
    assert 0 < rec["usage"]["kaggle_quota_hours"] <= 20 / 3600
    run_dir = Path(rec["output_dir"])
    epochs = metrics_epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1)) and epochs
    assert (run_dir / "checkpoints" / f"ckpt-epoch-{epochs[-1]:04d}.json").is_file()
    assert kernels_of(sim) == []


def test_gc_removes_a_kernel_this_store_pushed_that_no_run_knows(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path
) -> None:
    from launcher.targets.kaggle.client import Credentials, KaggleClient

    client = KaggleClient(Credentials(USER, key="0123456789abcdef"), sim.url)
    key = store_key(launch_home)
    stray = {
        "slug": f"{USER}/launch-ghost-abc123-s1-{key}",
        "newTitle": f"launch ghost-abc123 s1 {key}",
        "text": "print('left behind by a launcher killed inside submit')\n",
        "language": "python",
        "kernelType": "script",
        "kernelExecutionType": "QUICK_SAVE",
    }
    assert not client.call("kernels", "save_kernel", stray).get("error")
    assert f"{USER}/launch-ghost-abc123-s1-{key}" in kernels_of(sim)
    proc = launch(project, kaggle_env, "gc", "--target", "kaggle", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"remove alice/launch-ghost-abc123-s1-{key}" in proc.stdout
    assert f"{USER}/launch-ghost-abc123-s1-{key}" not in kernels_of(sim)
    again = launch(project, kaggle_env, "gc", "--target", "kaggle")
    assert "nothing to clean up" in again.stdout, again.stdout + again.stderr


def test_a_secret_missing_on_kaggle_fails_the_run_saying_where_to_add_it(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    proc = launch(
        project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle", "--profile", "smoke",
        "--set", "secrets=[NOT_ON_KAGGLE]",
    )  # fmt: skip
    assert proc.returncode == 6, proc.stdout + proc.stderr
    rec = record(project, kaggle_env)
    assert rec["status"] == "failed"
    assert "the secret NOT_ON_KAGGLE is not attached to this kernel" in rec["message"]
    assert "Add-ons -> Secrets" in rec["message"]
    assert kernels_of(sim) == []
