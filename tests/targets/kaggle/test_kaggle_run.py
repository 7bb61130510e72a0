"""`launch run --target kaggle` end to end: the real CLI, the Kaggle sim running the generated
kernel in docker, the hello workload (a real training loop with checkpoints and resume).

Each test checks what a user would: the exit code, the outputs pulled into runs/<id>, the record
in the store, and that nothing is left on the platform (kernels deleted, containers gone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.sim.kaggle import KaggleSim
from tests.targets.kaggle.conftest import USER, kernels_of, launch, metrics_epochs, record

SMOKE = ("run", "jobs/hello.yaml", "--target", "kaggle", "--profile", "smoke")


def bundle_versions(sim: KaggleSim) -> int:
    ds = sim.datasets.find(USER, "launch-bundle-hello")
    assert ds is not None, "the bundle was never uploaded as a dataset"
    assert ds.is_private
    return len(ds.versions)


def test_hello_runs_on_kaggle_and_the_bundle_dataset_is_reused_until_the_code_changes(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    first = launch(project, kaggle_env, *SMOKE)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "uploaded the bundle as private dataset alice/launch-bundle-hello" in first.stderr
    rec = record(project, kaggle_env)
    assert (rec["status"], rec["target"]) == ("succeeded", "kaggle")
    run_dir = Path(rec["output_dir"])
    assert metrics_epochs(run_dir) == [1, 2, 3]
    assert (run_dir / "checkpoints" / "ckpt-epoch-0003.json").is_file()
    log = (run_dir / "logs" / "job.log").read_text()
    assert "epoch 3/3" in log and "workload exited; exit code 0" in log
    assert "bundle" not in {p.name for p in run_dir.iterdir()}  # the code is not an output
    assert "epoch 3/3" in first.stdout  # shown from Kaggle's log stream
    assert any(c.startswith("GET /v1/kernels/logs/stream/alice/launch-hello-") for c in sim.calls)
    assert bundle_versions(sim) == 1

    # the same code again, through a short 429/503 storm on status and push: retried, reused
    sim.fail_next_requests(3, 429, retry_after=0.05, method="GetKernelSessionStatus")
    second = launch(project, kaggle_env, *SMOKE)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "bundle unchanged: reusing dataset alice/launch-bundle-hello version 1" in second.stderr
    assert bundle_versions(sim) == 1
    assert record(project, kaggle_env)["status"] == "succeeded"

    # changed code: a new version, and the kernel runs the new code
    train = project / "workloads" / "hello" / "hello" / "train.py"
    train.write_text(train.read_text() + "\n# changed for the test\n")
    sim.fail_next_requests(2, 503, method="SaveKernel")
    third = launch(project, kaggle_env, *SMOKE)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "the code changed: uploaded a new version of dataset" in third.stderr
    assert bundle_versions(sim) == 2
    mounted = dict(sim.kernels.sessions()[-1].inputs)["launch-bundle-hello"]
    assert mounted.name == "v2"  # the kernel pinned the new version
    assert kernels_of(sim) == []  # every run deleted its kernel


@pytest.mark.parametrize("cap", ["ours"])
def test_a_job_longer_than_the_session_cap_finishes_across_two_chained_sessions(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], cap: str
) -> None:
    """ "ours": targets.kaggle.session_hours is 10 s, the agent stops the job before it.
    (Kaggle's own cap, shorter than the job knows, is the contract suite's pre-emption case:
    Kaggle's SIGTERM ends the session, the job saves on it, the next session goes on.)"""
    calls_before = len(sim.calls)
    limit = ["--set", "targets.kaggle.session_hours=0.0028"] if cap == "ours" else []
    if cap == "kaggle's":
        sim.set_session_seconds(6)
    try:
        proc = launch(
            project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle",
            "--set", "run=python3 -m hello.train --epochs 16 --epoch-seconds 0.5",
            "--set", "limits.grace_seconds=1", *limit,
        )  # fmt: skip
    finally:
        sim.set_session_seconds(12 * 3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting attempt 2 of 10 from checkpoint ckpt-epoch-" in proc.stderr, proc.stderr
    rec = record(project, kaggle_env)
    assert rec["status"] == "succeeded"
    run_dir = Path(rec["output_dir"])
    # every epoch exactly once: none lost at the cap, none repeated after the resume
    assert metrics_epochs(run_dir) == list(range(1, 17))
    # each session's log: the first kept apart, the second as logs/job.log
    first = (run_dir / "logs" / "job.attempt-1.log").read_text()
    log = (run_dir / "logs" / "job.log").read_text()
    assert "attempt 1" in first and "attempt 2" in log and "attempt 1" not in log
    assert ("stop requested (time_limit" if cap == "ours" else "received SIGTERM") in first
    assert "resuming from" in log and "ckpt-epoch-" in log
    assert [a["end"] for a in rec["attempts"]] == ["preempted", "succeeded"]
    pushes = [c for c in sim.calls[calls_before:] if c.endswith("/SaveKernel")]
    assert len(pushes) == 2
    assert kernels_of(sim) == []
    assert sim.datasets.find(USER, f"launch-state-hello-{rec['id'].rsplit('-', 1)[1]}-a2") is None


def test_big_files_ride_in_their_own_dataset_and_a_code_change_uploads_only_the_code(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    import hashlib
    import os

    weights = os.urandom(3 << 20)
    (project / "workloads" / "hello" / "hello" / "weights.bin").write_bytes(weights)
    (project / "jobs" / "assets.yaml").write_text(
        "name: assets\nimage: hello\nworkload: workloads/hello\n"
        "run: python3 -c \"import hashlib, os; open(os.environ['LAUNCH_OUTPUT_DIR'] + "
        "'/seen.txt', 'w').write(hashlib.sha256(open('hello/weights.bin', 'rb').read())"
        '.hexdigest())"\n'
        "resources: {gpu: {count: 0}, disk_gb: 1}\nlimits: {max_hours: 1, grace_seconds: 5}\n"
    )
    args = ("run", "jobs/assets.yaml", "--target", "kaggle")
    first = launch(project, kaggle_env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "uploaded the bundle as private dataset alice/launch-bundle-assets" in first.stderr
    assert (
        "uploaded the bundle's big files as private dataset alice/launch-assets-assets"
        in first.stderr
    )
    seen = Path(record(project, kaggle_env)["output_dir"]) / "outputs" / "seen.txt"
    assert seen.read_text() == hashlib.sha256(weights).hexdigest()  # unpacked beside the code

    train = project / "workloads" / "hello" / "hello" / "train.py"
    train.write_text(train.read_text() + "\n# changed for the test\n")
    before = sim.bytes_uploaded
    second = launch(project, kaggle_env, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    sent = sim.bytes_uploaded - before
    assert "the code changed: uploaded a new version of dataset alice/launch-bundle-assets" in (
        second.stderr
    )
    assert "bundle's big files unchanged: reusing dataset alice/launch-assets-assets" in (
        second.stderr
    )
    assert 0 < sent < 200_000, sent  # the code, not the 3 MB of weights again
    seen = Path(record(project, kaggle_env)["output_dir"]) / "outputs" / "seen.txt"
    assert seen.read_text() == hashlib.sha256(weights).hexdigest()
    assert sim.datasets.find(USER, "launch-assets-assets") is not None  # kept: a cache
    assert kernels_of(sim) == []
