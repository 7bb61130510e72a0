"""The svg_quality workload (workloads/svg_quality), run for real as `python -m svg_quality.train`
subprocesses: labels really made by vtracer + resvg + SSIM, features from transformers' ResNet-50
with random weights (HF_HUB_OFFLINE=1: nothing is downloaded), the MLP trained on CPU.

transformers, vtracer, resvg-py and onnxruntime are not in the project virtualenv: a session
fixture builds one from images/svg_quality/requirements.txt (torch==2.13.0 resolves to the local
CPU wheel through pip's find-links), once per machine, under $LAUNCH_CACHE/test-venvs/.

Checked: the MLP has exactly 2,766,337 parameters; a smoke run's outputs (metrics, summary with
throughput, latency and the AMP-vs-fp32 comparison, checkpoints, best model) and its exports,
reloaded here and compared with the eager model on new inputs; SIGTERM -> checkpoint + 143 ->
resume with no epoch lost or repeated and the same numbers as an uninterrupted run (also in a
fresh output dir), labels and features read from their caches; early stopping on validation
Pearson, kept across a resume; bad inputs -> exit 2 with one message; the smoke profile inside
the image built from images/svg_quality/Dockerfile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_signals, launch_cmd
from tests.venvs import cached_venv
from tests.workloads.signals import job_env, sigterm_after_lines

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "workloads" / "svg_quality"
REQUIREMENTS = REPO / "images" / "svg_quality" / "requirements.txt"
# small and quick: 20 logos x 6 parameter sets, 64x64, a few epochs; ~8 s a run once cached
TINY = ("--smoke", "--synthetic", "20", "--per-image", "6", "--latency-iters", "5")


@pytest.fixture(scope="session")
def sq_python() -> Path:
    return cached_venv(
        "svg_quality", requirements=REQUIREMENTS,
        what="torch==2.13.0 (local CPU wheel), transformers, vtracer, resvg-py, onnxruntime",
    )  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One label/feature cache for the module: only the first run traces and extracts."""
    return tmp_path_factory.mktemp("svgq") / "data"


def _env(tmp: Path, resume: Path | None = None) -> dict[str, str]:
    return job_env(tmp, resume, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")


def train(python: Path, tmp: Path, *args: str, resume: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(python), "-m", "svg_quality.train", *args], cwd=WORKLOAD, env=_env(tmp, resume),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_mlp_has_exactly_the_seeds_2766337_parameters() -> None:
    """2056 -> [1024, 512, 256] -> 1 with BatchNorm: (2056*1024 + 1024) + 2*1024 +
    (1024*512 + 512) + 2*512 + (512*256 + 256) + 2*256 + (256 + 1)."""
    import torch

    sys.path.insert(0, str(WORKLOAD))
    try:
        from svg_quality.model import QualityPredictor, count_parameters
    finally:
        sys.path.remove(str(WORKLOAD))
    model = QualityPredictor()
    assert count_parameters(model) == 2_766_337
    want = (2056 * 1024 + 1024) + 2048 + (1024 * 512 + 512) + 1024 + (512 * 256 + 256) + 512 + 257
    assert want == 2_766_337
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 2056), (512, 1024), (256, 512), (1, 256)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 3
    model.eval()
    y = model(torch.randn(5, 2056) * 50)
    assert y.shape == (5,) and bool(((y >= 0) & (y <= 1)).all())


def test_smoke_run_trains_exports_and_times(sq_python: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = train(sq_python, tmp_path, "--smoke", "--compare-amp")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 60, f"smoke run took {took:.1f}s"
    out = tmp_path / "outputs"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    for r in rows:
        assert {
            "loss",
            "val_mse",
            "val_pearson",
            "val_spearman",
            "lr",
            "samples_per_s",
        } <= r.keys()
        assert r["samples_per_s"] > 0 and -1 <= r["val_pearson"] <= 1
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    assert rows[-1]["lr"] < rows[0]["lr"]  # cosine schedule

    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["params"] == 2_766_337 and s["device"] == "cpu"
    assert s["images"] == 24 and s["samples"] == 24 * 8
    assert s["split_samples"] == {"train": 20 * 8, "val": 2 * 8, "test": 2 * 8}
    lo, hi = s["ssim_range"]  # real tracings: some parameter sets are much worse than others
    assert 0 <= lo < 0.8 and 0.9 < hi <= 1, s["ssim_range"]
    assert s["label_seconds"] > 0 and s["feature_images_per_s"] > 0 and s["samples_per_s"] > 0
    assert s["exports"]["ok"] is True
    assert s["exports"]["torchscript"]["max_abs_diff"] <= 1e-4
    assert s["exports"]["onnx"]["max_abs_diff"] <= 1e-4
    lat = json.loads((out / "inference_benchmark.json").read_text())
    assert lat == s["latency"]
    for k in ("mlp_eager", "mlp_torchscript_cpu", "mlp_onnxruntime_cpu", "pipeline_eager"):
        assert 0 < lat[k]["p50_ms"] <= lat[k]["p95_ms"], (k, lat[k])
    cmp = lat["amp_vs_fp32_train_samples_per_s"]  # bf16 autocast on CPU vs fp32, same run
    assert cmp["fp32"] > 0 and cmp["bf16"] > 0 and cmp["speedup"] > 0
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == [f"ckpt-epoch-{e:04d}.pt" for e in (4, 5, 6)]
    assert "epoch 6/6" in (out / "training.log").read_text()

    # the exports, reloaded here, agree with the best model run eagerly on inputs they never saw
    check = r"""
import sys, torch, numpy as np, onnxruntime as ort
sys.path.insert(0, '.')
from svg_quality.model import QualityPredictor
out = sys.argv[1]
m = QualityPredictor(); m.load_state_dict(torch.load(out + '/best.pth', weights_only=True)['model']); m.eval()
x = torch.randn(33, 2056) * 3
with torch.no_grad():
    want = m(x).numpy()
    ts = torch.jit.load(out + '/exports/model.torchscript.pt')(x).numpy()
onnx = ort.InferenceSession(out + '/exports/model.onnx').run(None, {'features': x.numpy()})[0]
print(float(np.abs(ts - want).max()), float(np.abs(onnx - want).max()), float(want.std()))
"""
    res = subprocess.run([str(sq_python), "-c", check, str(out)], cwd=WORKLOAD,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ts_diff, onnx_diff, spread = (float(v) for v in res.stdout.split())
    assert ts_diff <= 1e-5 and onnx_diff <= 1e-4 and spread > 0, res.stdout


@pytest.mark.full
def test_sigterm_saves_a_checkpoint_and_resume_loses_and_repeats_no_epoch(sq_python: Path, data_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    args = (*TINY, "--data-dir", str(data_dir), "--epochs", "5", "--patience", "50")
    ref = train(sq_python, tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stdout + ref.stderr

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(sq_python), "-m", "svg_quality.train", *args, "--epoch-seconds", "1.0"],
        cwd=WORKLOAD, env=_env(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    stdout, stderr, exit_seconds = sigterm_after_lines(
        proc, run / "outputs" / "metrics.jsonl", wait_s=60, exit_timeout_s=30
    )
    assert proc.returncode == 143, stdout + stderr
    assert exit_seconds < 5, f"took {exit_seconds:.1f}s to stop after SIGTERM"
    stopped_at = len(metrics(run / "outputs"))
    assert 2 <= stopped_at < 5
    assert f"checkpoint saved on SIGTERM at epoch {stopped_at}" in stdout
    ckpt = run / "checkpoints" / f"ckpt-epoch-{stopped_at:04d}.pt"
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == stopped_at
    assert "exports" not in summary  # nothing exported from a half-trained model
    saved = tmp_path / "saved.pt"
    saved.write_bytes(ckpt.read_bytes())

    with open(run / "outputs" / "metrics.jsonl", "a") as f:  # a line past the checkpoint (kill -9)
        f.write(json.dumps({"epoch": stopped_at + 1, "loss": 99.0}) + "\n")
    resumed = train(sq_python, run, *args, resume=ckpt)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # labels and features come from the caches the first run made: nothing traced again
    assert "labels: 120 samples from the cache" in resumed.stdout
    assert "features: 20 images from the cache" in resumed.stdout
    assert f"resumed from epoch {stopped_at}" in resumed.stdout
    rows, want = metrics(run / "outputs"), metrics(tmp_path / "ref" / "outputs")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]  # none lost, none repeated
    for got, exp in zip(rows, want, strict=True):
        for k in ("loss", "val_mse", "val_pearson", "lr"):
            assert got[k] == pytest.approx(exp[k], rel=1e-4, abs=1e-6), (got["epoch"], k)
    s = json.loads((run / "outputs" / "summary.json").read_text())
    assert s["resumed_from"] == stopped_at and s["exports"]["ok"]

    elsewhere = tmp_path / "elsewhere"  # an empty output dir: the earlier epochs come along
    again = train(sq_python, elsewhere, *args, resume=saved)
    assert again.returncode == 0, again.stderr
    assert [r["loss"] for r in metrics(elsewhere / "outputs")] == [r["loss"] for r in rows]


@pytest.mark.full
def test_early_stopping_on_validation_pearson_survives_a_resume(sq_python: Path, data_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    args = (
        *TINY,
        "--data-dir",
        str(data_dir),
        "--epochs",
        "20",
        "--patience",
        "2",
        "--lr",
        "0.003",
    )
    proc = train(sq_python, tmp_path, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    rows = metrics(tmp_path / "outputs")
    assert s["stopped_early"] is True and s["epochs_done"] == len(rows) < 20
    assert s["epochs_done"] - s["best_epoch"] == 2  # patience: 2 epochs without a better one
    best = max(rows, key=lambda r: r["val_pearson"])
    assert best["epoch"] == s["best_epoch"]
    assert s["best_val_pearson"] == pytest.approx(best["val_pearson"], abs=1e-6)
    assert all(r["val_pearson"] <= best["val_pearson"] + 1e-4 for r in rows[best["epoch"] :])
    assert "early stop: no better val Pearson for 2 epochs" in proc.stdout
    # resuming a run that stopped early trains no further epoch
    last = tmp_path / "checkpoints" / f"ckpt-epoch-{s['epochs_done']:04d}.pt"
    again = train(sq_python, tmp_path / "again", *args, resume=last)
    assert again.returncode == 0, again.stderr
    assert len(metrics(tmp_path / "again" / "outputs")) == s["epochs_done"]
    assert json.loads((tmp_path / "again" / "outputs" / "summary.json").read_text())[
        "stopped_early"
    ]


@pytest.mark.full
def test_bad_inputs_exit_2_with_one_message(sq_python: Path, data_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    logos = tmp_path / "logos"
    logos.mkdir()
    (logos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (logos / "notes.jpg").write_text("not an image")
    nowhere = tmp_path / "nowhere"
    bad_ckpt = tmp_path / "ckpt-epoch-0002.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    cases: list[tuple[tuple[str, ...], str, Path | None]] = [
        (("--epochs", "1"), "--images DIR or --synthetic N is required", None),
        (("--images", str(nowhere)), f"--images {nowhere} does not exist", None),
        (("--images", str(logos)), f"no readable images (png/jpg/bmp/webp) under {logos}", None),
        ((*TINY, "--data-dir", str(data_dir), "--backbone", "no-such-org/no-such-model"),
         "cannot load --backbone no-such-org/no-such-model", None),
        ((*TINY, "--data-dir", str(data_dir), "--epochs", "1"), f"cannot resume from {bad_ckpt}", bad_ckpt),
    ]  # fmt: skip
    for args, message, resume in cases:
        proc = train(sq_python, tmp_path, *args, resume=resume)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr

    # readable images next to corrupt ones: the corrupt ones are logged and skipped
    from_png = subprocess.run(
        [str(sq_python), "-c", "import sys; sys.path.insert(0, '.'); import numpy as np; "
         "from svg_quality.labels import synthetic_logo; r = np.random.default_rng(3); "
         "[synthetic_logo(r, 48).save(f'{sys.argv[1]}/logo_{i}.png') for i in range(4)]", str(logos)],
        cwd=WORKLOAD, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert from_png.returncode == 0, from_png.stderr
    proc = train(sq_python, tmp_path / "mixed", "--images", str(logos), "--backbone", "random",
                 "--per-image", "2", "--image-size", "48", "--feature-size", "32", "--epochs", "1",
                 "--latency-iters", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"skipping unreadable image {logos / 'broken.png'}" in proc.stderr
    assert f"skipping unreadable image {logos / 'notes.jpg'}" in proc.stderr
    assert json.loads((tmp_path / "mixed" / "outputs" / "summary.json").read_text())["images"] == 4


@pytest.mark.full
def test_smoke_profile_runs_inside_the_svg_quality_image(
    project: Path, cpu_image_env: str
) -> None:
    """`launch run jobs/svg_quality.yaml --profile smoke` inside the image built from
    images/svg_quality/Dockerfile on the local base (torch from the machine's CPU wheel through
    LAUNCH_PIP_EXTRA_ARGS): the image, the job spec and the workload agree."""
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/svg_quality.yaml", "--target", "local", "--profile", "smoke",
         "--set", "targets.local.runtime=docker", "--json"],
        cwd=project, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    run = Path(rec["output_dir"])
    assert [r["epoch"] for r in metrics(run / "outputs")] == list(range(1, 7))
    s = json.loads((run / "outputs" / "summary.json").read_text())
    assert s["status"] == "completed" and s["params"] == 2_766_337 and s["exports"]["ok"]
    assert (run / "outputs" / "exports" / "model.onnx").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "ckpt-epoch-0006.pt"
