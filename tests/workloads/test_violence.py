"""The violence workload (workloads/violence), run for real as `python -m violence.train`
subprocesses with real TensorFlow (tensorflow-cpu) on synthetic video files, at tiny sizes.

TensorFlow cannot share the project virtualenv (it pins torch/numpy for the other workloads), so
a session fixture builds one from images/violence/requirements-cpu.txt, once per machine, under
``$LAUNCH_CACHE/test-venvs/violence-<hash>`` (~1.8 GB, ~30 s from PyPI), and fails loudly if it
cannot.

Checked: a smoke run's outputs (metrics, summary, checkpoints, best model, feature cache); a
second run reads every feature from the cache without running VGG19, and logs and skips corrupt
videos; SIGTERM -> checkpoint + 143 -> resume with no epoch lost or repeated and the same numbers
as an uninterrupted run, also in a fresh output dir under mixed_float16 (loss-scale state);
MirroredStrategy over two logical CPUs; a missing --data-dir and an unusable checkpoint -> exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_signals
from tests.venvs import cached_venv
from tests.workloads.signals import job_env, sigterm_after_lines

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "workloads" / "violence"
REQUIREMENTS = REPO / "images" / "violence" / "requirements-cpu.txt"
# 4 clips per class (1 of each held out), 8 frames of 64x64: VGG19 takes ~2 s on 2 cores
TINY = ("--smoke", "--synthetic", "4")


@pytest.fixture(scope="session")
def tf_python() -> Path:
    """python of a virtualenv with requirements-cpu.txt installed, keyed by its content."""
    return cached_venv(
        "violence", requirements=REQUIREMENTS, what="tensorflow-cpu, opencv-python-headless"
    )


def _env(tmp: Path, resume: Path | None = None) -> dict[str, str]:
    return job_env(tmp, resume, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def train(
    python: Path, tmp: Path, *args: str, resume: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "violence.train", *args],
        cwd=WORKLOAD,
        env=_env(tmp, resume),
        capture_output=True,
        text=True,
        errors="replace",  # ffmpeg echoes bytes of a garbage file into its messages
        timeout=120,
    )


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One data dir and one feature cache for the module: only the first run pays for VGG19."""
    base = tmp_path_factory.mktemp("violence")
    return {"data": base / "videos", "cache": base / "feature_cache"}


def common(shared: dict[str, Path]) -> tuple[str, ...]:
    return (*TINY, "--data-dir", str(shared["data"]), "--feature-cache", str(shared["cache"]))


def test_smoke_run_writes_outputs_checkpoints_and_the_feature_cache(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    t0 = time.monotonic()
    proc = train(tf_python, tmp_path, *common(shared), "--epochs", "2")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 60, f"smoke run took {took:.1f}s"
    assert "features: 8 videos extracted by VGG19, 0 from cache" in proc.stdout
    out = tmp_path / "outputs"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    keys = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    for r in rows:
        assert keys | {"samples_per_s", "val_auc"} <= r.keys()
        assert r["samples_per_s"] > 0 and 0 <= r["val_accuracy"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert summary["device"] == "cpu" and summary["precision"] == "float32"
    assert summary["xla"] is False and summary["resumed_from"] is None
    assert summary["samples_per_s"] > 0 and summary["replicas"] == 1
    assert summary["train_videos"] == 6 and summary["val_videos"] == 2
    assert summary["features"]["extracted"] == 8 and summary["skipped_videos"] == []

    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert {"ckpt-epoch-0001.npz", "ckpt-epoch-0002.npz", "ckpt-best.npz"} == set(ckpts)
    assert (out / "best_model.keras").is_file() and (out / "training.log").is_file()
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    # one cache file per video, written as real videos by OpenCV
    assert len(list(shared["cache"].glob("*.npz"))) == 8
    assert len(list(shared["data"].rglob("*.avi"))) == 8


@pytest.mark.full
def test_a_rerun_reads_the_feature_cache_and_skips_corrupt_videos(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    train_dir = shared["data"] / "train"
    if not train_dir.is_dir():  # run alone: make the data (and the cache) first
        assert (
            train(tf_python, tmp_path / "first", *common(shared), "--epochs", "1").returncode == 0
        )
    fight = train_dir / "Fight"
    good = sorted(fight.glob("*.avi"))[0]
    (fight / "zz_empty.mp4").write_bytes(b"")
    (fight / "zz_garbage.avi").write_bytes(os.urandom(4096))
    (fight / "zz_truncated.avi").write_bytes(good.read_bytes()[:200])  # header only
    try:
        proc = train(tf_python, tmp_path, *common(shared), "--epochs", "1")
    finally:
        for name in ("zz_empty.mp4", "zz_garbage.avi", "zz_truncated.avi"):
            (fight / name).unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the CNN never ran: every usable video came from the cache
    assert "features: 0 videos extracted by VGG19, 8 from cache" in proc.stdout
    assert "3 skipped" in proc.stdout
    for name in ("zz_empty.mp4", "zz_garbage.avi", "zz_truncated.avi"):
        assert f"skipping corrupt or unreadable video {fight / name}" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert summary["features"]["extracted"] == 0 and summary["features"]["cached"] == 8
    assert sorted(Path(p).name for p in summary["skipped_videos"]) == [
        "zz_empty.mp4",
        "zz_garbage.avi",
        "zz_truncated.avi",
    ]


@pytest.mark.full
def test_sigterm_saves_a_checkpoint_and_resume_loses_and_repeats_no_epoch(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    args = (*common(shared), "--epochs", "4")
    ref = train(tf_python, tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(tf_python), "-m", "violence.train", *args, "--epoch-seconds", "1.5"],
        cwd=WORKLOAD,
        env=_env(run),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        preexec_fn=default_signals,
    )
    stdout, stderr, exit_seconds = sigterm_after_lines(
        proc, run / "outputs" / "metrics.jsonl", wait_s=60, exit_timeout_s=30
    )
    assert proc.returncode == 143, stdout + stderr
    assert exit_seconds < 5, f"took {exit_seconds:.1f}s to stop after SIGTERM"
    stopped_at = len(metrics(run / "outputs"))
    assert 2 <= stopped_at < 4
    assert f"checkpoint saved on SIGTERM at epoch {stopped_at}" in stdout
    ckpt = run / "checkpoints" / f"ckpt-epoch-{stopped_at:04d}.npz"
    assert ckpt.is_file()
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == stopped_at

    # a run killed -9 after its metrics line but before its checkpoint leaves a line ahead
    with open(run / "outputs" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": stopped_at + 1, "loss": 99.0}) + "\n")
    resumed = train(tf_python, run, *args, resume=ckpt)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from epoch {stopped_at}" in resumed.stdout
    rows = metrics(run / "outputs")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # none lost, none repeated
    assert json.loads((run / "outputs" / "summary.json").read_text())["resumed_from"] == stopped_at
    # the resumed run continues exactly where the uninterrupted one went
    for got, exp in zip(rows, metrics(tmp_path / "ref" / "outputs"), strict=True):
        for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert got[k] == pytest.approx(exp[k], rel=1e-4, abs=1e-6), (got["epoch"], k)


def test_missing_data_or_unusable_checkpoint_exits_2_with_a_message(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    proc = train(tf_python, tmp_path, "--epochs", "1")
    assert proc.returncode == 2
    assert "--data-dir DIR is required" in proc.stderr and "Traceback" not in proc.stderr
    nowhere = tmp_path / "nowhere"
    proc = train(tf_python, tmp_path, "--data-dir", str(nowhere))
    assert proc.returncode == 2
    assert f"--data-dir {nowhere} does not exist" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = train(tf_python, tmp_path, "--data-dir", str(empty))
    assert proc.returncode == 2 and "no videos in Fight/NonFight" in proc.stderr

    bad = tmp_path / "ckpt-epoch-0003.npz"
    bad.write_bytes(b"not a checkpoint")
    proc = train(tf_python, tmp_path, *common(shared), "--epochs", "1", resume=bad)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot resume from {bad}" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.full
def test_mirrored_strategy_over_two_logical_cpus(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    """The multi-GPU path (MirroredStrategy, per-replica batches, all-reduce) without a GPU:
    --cpu-replicas 2 splits the CPU into two logical devices."""
    proc = train(tf_python, tmp_path, *common(shared), "--epochs", "1", "--cpu-replicas", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 replica(s)" in proc.stdout
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["epochs_done"] == 1
    assert [r["epoch"] for r in metrics(tmp_path / "outputs")] == [1]


@pytest.mark.full
def test_resume_elsewhere_under_mixed_float16_matches_the_uninterrupted_run(
    tf_python: Path, shared: dict[str, Path], tmp_path: Path
) -> None:
    """A checkpoint carries the loss-scale state of mixed_float16 and the metrics so far: resumed
    on "another machine" (an empty output dir), the run repeats the uninterrupted one."""
    args = (*common(shared), "--epochs", "2", "--precision", "mixed_float16")
    ref = train(tf_python, tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    ckpt = tmp_path / "ref" / "checkpoints" / "ckpt-epoch-0001.npz"
    again = train(tf_python, tmp_path / "elsewhere", *args, resume=ckpt)
    assert again.returncode == 0, again.stdout + again.stderr
    got, want = metrics(tmp_path / "elsewhere" / "outputs"), metrics(tmp_path / "ref" / "outputs")
    assert [r["epoch"] for r in got] == [1, 2]
    for g, w in zip(got, want, strict=True):
        for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (g["epoch"], k)
    summary = json.loads((tmp_path / "elsewhere" / "outputs" / "summary.json").read_text())
    assert summary["precision"] == "mixed_float16" and summary["resumed_from"] == 1


@pytest.mark.full
def test_smoke_profile_runs_inside_the_violence_image(project: Path, cpu_image_env: str) -> None:
    """`launch run jobs/violence.yaml --profile smoke` inside the image built from
    images/violence/Dockerfile on the local base with requirements-cpu.txt (the smoke profile
    picks it): the image, the job spec and the workload agree. The build is cached by content."""
    from tests.conftest import launch_cmd

    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/violence.yaml", "--target", "local", "--profile", "smoke",
         "--set", "targets.local.runtime=docker", "--set", "run=python3 -m violence.train --smoke --synthetic 4",
         "--json"],
        cwd=project, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    run = Path(rec["output_dir"])
    epochs = [m["epoch"] for m in metrics(run / "outputs")]
    assert epochs and epochs == list(range(1, len(epochs) + 1))
    assert (run / "outputs" / "summary.json").is_file()
    assert any((run / "checkpoints").iterdir())
