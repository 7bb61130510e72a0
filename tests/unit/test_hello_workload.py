"""The demo workload (workloads/hello), run for real as `python -m hello.train` subprocesses.

It is the workload every launcher test and the quick start run, so its side of the launch
contract is checked here on its own: metrics, atomic pruned checkpoints, exact resume,
SIGTERM -> checkpoint + 143, unusable LAUNCH_RESUME_FROM -> 2, --fail-at-epoch -> 3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import default_signals, kit_path

WORKLOAD = Path(__file__).resolve().parents[2] / "workloads" / "hello"


def _env(tmp: Path, resume: Path | str | None = None, out: str = "outputs") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    env.pop("HELLO_GREETING", None)
    env["PYTHONPATH"] = kit_path()
    env["LAUNCH_OUTPUT_DIR"] = str(tmp / out)
    env["LAUNCH_CHECKPOINT_DIR"] = str(tmp / "checkpoints")
    if resume is not None:
        env["LAUNCH_RESUME_FROM"] = str(resume)
    return env


def train(
    tmp: Path, *args: str, resume: Path | str | None = None, out: str = "outputs"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hello.train", *args],
        cwd=WORKLOAD,
        env=_env(tmp, resume, out),
        capture_output=True,
        text=True,
        timeout=60,
    )


def metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def checkpoints(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "checkpoints").iterdir())


def test_trains_for_real_and_reports_every_epoch(tmp_path: Path) -> None:
    proc = train(tmp_path, "--epochs", "8")
    assert proc.returncode == 0, proc.stderr
    rows = metrics(tmp_path / "outputs" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    for r in rows:
        assert {"epoch", "loss", "accuracy", "lr", "seconds", "samples_per_s"} <= r.keys()
    losses = [r["loss"] for r in rows]
    assert losses[-1] < 0.75 * losses[0], losses  # it learns...
    assert all(losses[i + 1] <= losses[i] for i in range(len(losses) - 1)), losses  # steadily
    assert rows[-1]["accuracy"] > 0.8
    assert "epoch 3/8 loss=" in proc.stdout and " acc=" in proc.stdout

    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert summary["epochs_done"] == 8 and summary["status"] == "completed"
    assert summary["device"] == "cpu" and summary["resumed_from"] is None
    assert summary["final_accuracy"] > 0.8
    assert summary["final_loss"] <= losses[-1] + 0.05
    assert summary["total_seconds"] > 0 and summary["samples_per_s"] > 0


def test_checkpoints_are_atomic_and_pruned_to_three(tmp_path: Path) -> None:
    proc = train(tmp_path, "--epochs", "7")
    assert proc.returncode == 0, proc.stderr
    # no temporary files left behind; only the newest three kept
    assert checkpoints(tmp_path) == [f"ckpt-epoch-{e:04d}.json" for e in (5, 6, 7)]
    ckpt = json.loads((tmp_path / "checkpoints" / "ckpt-epoch-0007.json").read_text())
    assert ckpt["epoch"] == 7
    assert len(ckpt["weights"]) == 3 and len(ckpt["optimizer"]["velocity"]) == 3
    assert ckpt["rng_state"]


def test_resume_continues_at_the_next_epoch_exactly(tmp_path: Path) -> None:
    reference = train(tmp_path / "ref", "--epochs", "9")
    assert reference.returncode == 0, reference.stderr
    ref = metrics(tmp_path / "ref" / "outputs" / "metrics.jsonl")

    first = train(tmp_path, "--epochs", "6", out="first")
    assert first.returncode == 0, first.stderr
    middle = tmp_path / "checkpoints" / "ckpt-epoch-0004.json"  # not the newest one
    second = train(tmp_path, "--epochs", "9", resume=middle, out="second")
    assert second.returncode == 0, second.stderr
    assert "resumed from epoch 4" in second.stdout

    done_first = [r["epoch"] for r in metrics(tmp_path / "first" / "metrics.jsonl")]
    rows = metrics(tmp_path / "second" / "metrics.jsonl")
    done_second = [r["epoch"] for r in rows]
    assert done_second[0] == 5, "resumed at the next epoch"
    # first run up to the checkpoint + the resumed run: every epoch once, in order
    assert [e for e in done_first if e <= 4] + done_second == list(range(1, 10))
    # weights, optimizer and shuffling state all came back: the same numbers as one long run
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref[4:]]
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["resumed_from"] == 4 and summary["epochs_done"] == 9


def test_sigterm_saves_the_last_completed_epoch_and_exits_143(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hello.train", "--epochs", "40", "--epoch-seconds", "0.5"],
        cwd=WORKLOAD,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    metrics_file = tmp_path / "outputs" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 15
        while not (metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 2 epochs within 15 s"
            time.sleep(0.05)
        time.sleep(0.2)  # mid-epoch
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took < 2.0, f"SIGTERM took {took:.2f}s"

    done = [r["epoch"] for r in metrics(metrics_file)]
    last = done[-1]
    assert done == list(range(1, last + 1))
    assert f"checkpoint saved on SIGTERM at epoch {last}" in out
    ckpt = tmp_path / "checkpoints" / f"ckpt-epoch-{last:04d}.json"
    assert json.loads(ckpt.read_text())["epoch"] == last
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == last

    # and the interrupted run continues from there
    resumed = train(tmp_path, "--epochs", str(last + 2), resume=ckpt)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in metrics(metrics_file)] == list(range(1, last + 3))


def test_unusable_resume_checkpoint_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "ckpt-epoch-0003.json"
    bad.write_text('{"epoch": 3, "weights": [0.1, ')  # cut short
    proc = train(tmp_path, resume=bad)
    assert proc.returncode == 2
    assert f"cannot resume from {bad}" in proc.stderr and "not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr

    bad.write_text('{"format": "hello-ckpt/1", "epoch": 3}')
    proc = train(tmp_path, resume=bad)
    assert proc.returncode == 2 and "malformed" in proc.stderr, proc.stderr

    missing = tmp_path / "nope.json"
    proc = train(tmp_path, resume=missing)
    assert proc.returncode == 2
    assert f"cannot resume from {missing}" in proc.stderr and "No such file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs" / "metrics.jsonl").exists()


def test_fail_at_epoch_exits_3_after_the_epochs_before_it(tmp_path: Path) -> None:
    proc = train(tmp_path, "--epochs", "5", "--fail-at-epoch", "3")
    assert proc.returncode == 3
    assert "injected failure at epoch 3" in proc.stderr
    assert [r["epoch"] for r in metrics(tmp_path / "outputs" / "metrics.jsonl")] == [1, 2]
    assert checkpoints(tmp_path)[-1] == "ckpt-epoch-0002.json"
