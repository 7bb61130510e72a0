"""The libcem workload (workloads/libcem), run for real as `python -m libcem.train` subprocesses
with real torch on CPU, at tiny sizes; and its smoke profile through the real launcher.

Checked: outputs of a smoke run (metrics, summary, pruned checkpoints, a valid PNG sample grid),
that it learns, SIGTERM -> checkpoint + 143 -> resume with no epoch lost or repeated (and the
same numbers as an uninterrupted run), CIFAR-10 read from real-format pickle batches (folder and
.tar.gz), corrupt batches skipped or refused, a missing --data-dir and a bad resume -> exit 2.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.workloads.signals import job_env, sigterm_after_lines

try:
    import numpy as np
    import torch
except ImportError as e:  # say what to install rather than skip: a skipped workload is untested
    pytest.fail(
        f"tests/workloads needs torch and numpy ({e}): "
        "pip install torch==2.13.0 numpy==2.2.6 (the local CPU build of torch)",
        pytrace=False,
    )

from tests.conftest import default_signals, launch_cmd

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "workloads" / "libcem"
# tiny and quick: ~0.1 s an epoch on 2 cores, most of each run is importing torch
TINY = ("--smoke", "--tiles", "96", "--max-val", "16")


def _env(tmp: Path, resume: Path | None = None) -> dict[str, str]:
    # never pick up a CIFAR-10 on this machine
    return job_env(tmp, resume, LAUNCH_INPUT_DIR=str(tmp / "no-inputs"))


def train(tmp: Path, *args: str, resume: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libcem.train", *args],
        cwd=WORKLOAD,
        env=_env(tmp, resume),
        capture_output=True,
        text=True,
        timeout=60,
    )


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking the signature and the chunk CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[12 : 12 + 4 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(body) & 0xFFFFFFFF == crc
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 2)
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


def fake_cifar_batch(n: int, seed: int) -> bytes:
    """A batch in the real CIFAR-10 python format: a pickled dict with bytes keys, 'data' an
    (n, 3072) uint8 array (channel-major rows), 'labels' a list of ints."""
    rng = np.random.default_rng(seed)
    # smooth images (a gradient plus a block), so denoising has something to find
    yy, xx = np.mgrid[0:32, 0:32]
    imgs = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            a, b = rng.uniform(-3, 3, 2)
            imgs[i, c] = np.clip(128 + a * (xx - 16) + b * (yy - 16), 0, 255)
        y0, x0 = rng.integers(0, 24, 2)
        imgs[i, :, y0 : y0 + 8, x0 : x0 + 8] = rng.integers(0, 256, (3, 1, 1))
    batch = {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": imgs.reshape(n, 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(batch, protocol=2)


def test_smoke_run_writes_every_output_and_learns(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = train(tmp_path, "--smoke")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert took < 60, f"smoke run took {took:.1f}s"
    out = tmp_path / "outputs"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    keys = {"epoch", "loss", "val_loss", "psnr", "psnr_noisy", "lr", "seconds", "samples_per_s"}
    for r in rows:
        assert keys | {"sigma", "tau", "radius"} <= r.keys()
        for k in ("sigma", "tau", "radius"):
            assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
        assert r["samples_per_s"] > 0
    losses = [r["loss"] for r in rows]
    assert losses[-1] < 0.9 * losses[0], losses  # it learns...
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses  # steadily
    assert rows[-1]["psnr"] > rows[-1]["psnr_noisy"] + 1.0  # ...and denoises held-out images
    assert rows[-1]["lr"] < rows[0]["lr"]  # cosine schedule

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 4
    assert summary["device"] == "cpu" and summary["amp"] == "off"
    assert summary["resumed_from"] is None and summary["dataset"] == "deadleaves"
    assert summary["samples_per_s"] > 0 and summary["final_psnr"] == pytest.approx(
        rows[-1]["psnr"], abs=1e-3
    )

    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == [f"ckpt-epoch-{e:04d}.pt" for e in (2, 3, 4)]  # newest 3, no temporaries
    state = torch.load(tmp_path / "checkpoints" / ckpts[-1], weights_only=True)
    assert state["epoch"] == 4 and {"model", "optimizer", "scheduler", "rng"} <= state.keys()

    # 8 samples x 3 rows (clean, noisy, denoised) of 32x32 tiles, upscaled 2x, 2 px gaps
    assert png_size(out / "samples_epoch_0004.png") == (8 * 66 + 2, 3 * 66 + 2)
    assert json.loads((out / "loss_history.json").read_text())["loss"] == pytest.approx(
        losses, abs=1e-5
    )
    assert np.load(out / "loss_history.npy").shape == (4,)
    assert (out / "model_best_loss.pt").is_file() and (out / "training.log").is_file()
    assert "epoch 4/4 loss=" in proc.stdout


def test_sigterm_saves_a_checkpoint_and_resume_loses_and_repeats_no_epoch(tmp_path: Path) -> None:
    ref = train(tmp_path / "ref", *TINY, "--epochs", "5")
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "libcem.train", *TINY, "--epochs", "5", "--epoch-seconds", "0.5"],
        cwd=WORKLOAD,
        env=_env(run),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    stdout, stderr, exit_seconds = sigterm_after_lines(
        proc, run / "outputs" / "metrics.jsonl", wait_s=40, exit_timeout_s=15
    )
    assert proc.returncode == 143, stderr
    assert exit_seconds < 5, f"took {exit_seconds:.1f}s to stop after SIGTERM"
    stopped_at = len(metrics(run / "outputs"))
    assert 2 <= stopped_at < 5
    assert f"checkpoint saved on SIGTERM at epoch {stopped_at}" in stdout
    ckpt = run / "checkpoints" / f"ckpt-epoch-{stopped_at:04d}.pt"
    assert ckpt.is_file()
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == stopped_at

    saved = tmp_path / "saved.pt"  # the resumed run prunes it; kept for the fresh-dir resume
    saved.write_bytes(ckpt.read_bytes())
    # a run killed -9 after its metrics line but before its checkpoint leaves a line ahead
    with open(run / "outputs" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": stopped_at + 1, "loss": 99.0}) + "\n")

    resumed = train(run, *TINY, "--epochs", "5", resume=ckpt)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from epoch {stopped_at}" in resumed.stdout
    rows = metrics(run / "outputs")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]  # none lost, none repeated
    assert json.loads((run / "outputs" / "summary.json").read_text())["resumed_from"] == stopped_at
    # the resumed run continues exactly where the uninterrupted one went
    want = metrics(tmp_path / "ref" / "outputs")
    for got, exp in zip(rows, want, strict=True):
        for k in ("loss", "val_loss", "psnr", "sigma", "tau", "radius", "lr"):
            assert got[k] == pytest.approx(exp[k], rel=1e-4, abs=1e-6), (got["epoch"], k)

    # resumed on "another machine" (an empty output dir): the earlier epochs come with it
    elsewhere = tmp_path / "elsewhere"
    again = train(elsewhere, *TINY, "--epochs", str(stopped_at + 1), resume=saved)
    assert again.returncode == 0, again.stderr
    rows = metrics(elsewhere / "outputs")
    assert [r["epoch"] for r in rows] == list(range(1, stopped_at + 2))
    assert [r["loss"] for r in rows[:stopped_at]] == [r["loss"] for r in want[:stopped_at]]


def _cifar_files() -> dict[str, bytes]:
    files = {"data_batch_1": fake_cifar_batch(48, 1), "data_batch_2": fake_cifar_batch(32, 2)}
    files["test_batch"] = fake_cifar_batch(16, 3)
    return files


def test_trains_on_cifar10_batches_in_the_real_pickle_format(tmp_path: Path) -> None:
    data = tmp_path / "cifar"
    (data / "cifar-10-batches-py").mkdir(parents=True)
    for name, raw in _cifar_files().items():
        (data / "cifar-10-batches-py" / name).write_bytes(raw)
    proc = train(tmp_path, "--data-dir", str(data), "--epochs", "2", "--embed", "32")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert summary["dataset"] == "cifar10"
    assert summary["train_images"] == 80 and summary["held_out_images"] == 16
    assert [r["epoch"] for r in metrics(tmp_path / "outputs")] == [1, 2]
    assert "CIFAR-10 from" in proc.stdout


def test_reads_the_cifar10_archive_without_unpacking_it(tmp_path: Path) -> None:
    """The downloaded cifar-10-python.tar.gz as it is (in-process: the loader only, the
    training path is the one the test above runs)."""
    sys.path.insert(0, str(WORKLOAD))
    try:
        from libcem.data import find_cifar, load_cifar
    finally:
        sys.path.remove(str(WORKLOAD))
    files = _cifar_files()
    inputs = tmp_path / "inputs" / "some-kaggle-slug"  # found one folder down
    inputs.mkdir(parents=True)
    with tarfile.open(inputs / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    source = find_cifar(tmp_path / "inputs")
    assert source == inputs / "cifar-10-python.tar.gz"
    train_u8, test_u8 = load_cifar(source, log=pytest.fail)
    assert train_u8.shape == (80, 3, 32, 32) and train_u8.dtype == torch.uint8
    assert test_u8 is not None and test_u8.shape == (16, 3, 32, 32)
    # channel-major rows, as in the real files: row 0's first 1024 bytes are image 0's red plane
    first = pickle.loads(files["data_batch_1"])[b"data"][0]
    assert train_u8[0, 0].flatten().tolist() == first[:1024].tolist()


@pytest.mark.full
def test_corrupt_cifar_batches_are_skipped_with_a_warning_or_refused(tmp_path: Path) -> None:
    data = tmp_path / "cifar"
    data.mkdir()
    (data / "data_batch_1").write_bytes(fake_cifar_batch(48, 1))
    (data / "data_batch_2").write_bytes(fake_cifar_batch(32, 2)[:200])  # truncated download

    class Evil:  # a pickle that would run a command when loaded
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (data / "data_batch_3").write_bytes(pickle.dumps(Evil()))
    proc = train(tmp_path, "--data-dir", str(data), "--epochs", "1", "--max-val", "8")
    assert proc.returncode == 0, proc.stderr
    assert "skipping corrupt CIFAR-10 batch" in proc.stderr and "data_batch_2" in proc.stderr
    assert "refusing global" in proc.stderr and "data_batch_3" in proc.stderr
    assert not (tmp_path / "pwned").exists()
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    # no test_batch: the last 10% of the training images are held out
    assert summary["train_images"] == 44 and summary["held_out_images"] == 4

    (data / "data_batch_1").write_bytes(b"\x00not a pickle")
    (data / "data_batch_3").unlink()
    proc = train(tmp_path / "bad", "--data-dir", str(data), "--epochs", "1")
    assert proc.returncode == 2, proc.stderr
    assert "no usable CIFAR-10 training batch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_or_unusable_checkpoint_exits_2_with_a_message(tmp_path: Path) -> None:
    proc = train(tmp_path, "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1")
    assert proc.returncode == 2
    assert f"--data-dir {tmp_path / 'nowhere'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr

    bad = tmp_path / "ckpt-epoch-0003.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = train(tmp_path, *TINY, "--epochs", "1", resume=bad)
    assert proc.returncode == 2
    assert f"cannot resume from {bad}" in proc.stderr and "Traceback" not in proc.stderr


def test_smoke_profile_runs_through_the_launcher(project: Path) -> None:
    """`launch run jobs/libcem.yaml --target local --profile smoke`, as a user runs it: the
    profile picks the process runtime itself (no --set needed), even where docker answers.

    The process runtime builds its virtualenv from images/libcem/requirements.txt with system
    site packages - the base interpreter's, not this test virtualenv's. PYTHONPATH hands it the
    torch and numpy already installed here, so pip finds the pins satisfied instead of
    installing torch again (22 s and 860 MB per fresh LAUNCH_HOME)."""
    site = str(Path(torch.__file__).resolve().parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    )
    env.pop("LAUNCH_INPUT_DIR", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/libcem.yaml", "--target", "local", "--profile", "smoke"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    status = subprocess.run(
        [*launch_cmd(), "status", "last", "--json"], cwd=project, env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    rec = json.loads(status.stdout)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0
    run = Path(rec["output_dir"])
    assert run.parent == project / "runs"
    assert [r["epoch"] for r in metrics(run / "outputs")] == [1, 2, 3, 4]
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["device"] == "cpu"
    assert png_size(run / "outputs" / "samples_epoch_0004.png")[0] > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "ckpt-epoch-0004.pt"
    assert "epoch 4/4" in (run / "logs" / "job.log").read_text()
    assert took < 60, f"launch run --profile smoke took {took:.1f}s"


def test_smoke_profile_runs_inside_the_libcem_image(project: Path, cpu_image_env: str) -> None:
    """The same smoke job in the image built from images/libcem/Dockerfile on the local base
    (torch from the machine's CPU wheel, through LAUNCH_PIP_EXTRA_ARGS): the Dockerfile and the
    job agree on where Python, the packages and the workload live."""
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/libcem.yaml", "--target", "local", "--profile", "smoke",
         "--set", "targets.local.runtime=docker", "--json"],
        cwd=project, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    run = Path(rec["output_dir"])
    assert [r["epoch"] for r in metrics(run / "outputs")] == [1, 2, 3, 4]
    assert json.loads((run / "outputs" / "summary.json").read_text())["device"] == "cpu"
