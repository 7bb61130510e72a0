"""The deepfake workload (workloads/deepfake), run for real as `python -m deepfake ...`
subprocesses with real torch, diffusers, transformers and OpenCV on CPU, at tiny sizes; and its
smoke profiles through the real launcher (as a process, and inside the image).

diffusers and transformers do not live in the project virtualenv: a session fixture builds one
from images/deepfake/requirements-cpu.txt, once per machine, under
``$LAUNCH_CACHE/test-venvs/deepfake-<hash>`` (~1.5 GB, about a minute; torch from the local CPU
wheel), and fails loudly if it cannot.

Checked: generation with the tiny random TextToVideoSDPipeline writes real mp4 clips, contact
sheets and per-clip records, and a SIGTERM'd run resumes with only the missing clips; a training
smoke run writes metrics, checkpoints, eval.json with per-member scores, ROC and confusion PNGs
and benchmark.json; SIGTERM -> checkpoint + 143 -> resume with no epoch lost or repeated and
the same numbers as an uninterrupted run (also in a fresh output dir); the evaluate and
benchmark commands on a saved checkpoint; EfficientNet as the CNN; corrupt videos logged and
skipped; missing data, an empty data dir and unusable checkpoints -> exit 2 with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_signals, launch_cmd
from tests.venvs import cached_venv
from tests.workloads.signals import job_env, sigterm_after_lines

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "workloads" / "deepfake"
REQUIREMENTS = REPO / "images" / "deepfake" / "requirements-cpu.txt"
# tiny random ResNet + ViT on 64x64 crops, 4 frames per clip: ~1 s an epoch on 2 cores
TINY = ("--smoke", "--bench-iters", "0")


@pytest.fixture(scope="session")
def df_python() -> Path:
    """python of a virtualenv with requirements-cpu.txt installed, keyed by its content."""
    return cached_venv(
        "deepfake",
        requirements=REQUIREMENTS,
        what="torch==2.13.0 (local CPU wheel), diffusers, transformers, opencv-python-headless",
    )


def _env(tmp: Path, resume: Path | None = None) -> dict[str, str]:
    # HF_HUB_OFFLINE: any accidental hub call fails at once
    return job_env(tmp, resume, HF_HUB_OFFLINE="1", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")


def deepfake(
    python: Path, tmp: Path, *args: str, resume: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "deepfake", *args],
        cwd=WORKLOAD,
        env=_env(tmp, resume),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=180,
    )


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking the signature and the chunk CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(data[12 : 16 + length]) & 0xFFFFFFFF == crc
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def video_shape(python: Path, path: Path) -> list[int]:
    """[frames, height, width] as OpenCV decodes the file (in the workload's venv)."""
    code = (
        "import cv2, sys, json\n"
        "c = cv2.VideoCapture(sys.argv[1]); n = 0; shape = None\n"
        "while True:\n"
        "    ok, f = c.read()\n"
        "    if not ok: break\n"
        "    n += 1; shape = f.shape\n"
        "print(json.dumps([n, *(shape[:2] if shape else [0, 0])]))\n"
    )
    out = subprocess.run([str(python), "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.full
def test_generate_writes_clips_and_a_stopped_run_makes_only_the_missing_ones(
    df_python: Path, tmp_path: Path
) -> None:
    run = tmp_path / "gen"
    proc = subprocess.Popen(
        [str(df_python), "-m", "deepfake", "generate", "--smoke", "--num-videos", "5"],
        cwd=WORKLOAD, env=_env(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    sigterm_after_lines(proc, run / "outputs" / "generation.jsonl", 2, wait_s=120, exit_timeout_s=60)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 143, stdout + stderr
    assert "state saved" in stdout and "Traceback" not in stderr
    first = {c["index"]: c for c in jsonl(run / "outputs" / "generation.jsonl")}
    assert 2 <= len(first) < 5
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["videos_done"] == len(first)
    state = run / "checkpoints" / "generation-state.json"
    assert len(json.loads(state.read_text())["clips"]) == len(first)

    again = deepfake(df_python, run, "generate", "--smoke", "--num-videos", "5", resume=state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"({len(first)} already done)" in again.stdout
    clips = jsonl(run / "outputs" / "generation.jsonl")
    assert sorted(c["index"] for c in clips) == [0, 1, 2, 3, 4]  # none lost, none twice
    for c in clips:  # the clips made before the stop were kept, not made again
        if c["index"] in first:
            assert c == first[c["index"]]
        assert c["seed"] == c["index"] and c["seconds"] > 0 and c["peak_gpu_memory_mb"] is None
        assert video_shape(df_python, run / "outputs" / c["video"]) == [8, 32, 32]
        sheet = (run / "outputs" / c["video"]).with_suffix(".png").name
        assert png_size(run / "outputs" / "frames" / sheet) == (8 * 32, 32)
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["videos_done"] == 5
    assert summary["made_this_run"] == 5 - len(first) and summary["seconds_per_video"] > 0
    assert summary["model"] == "tiny-random:text-to-video-sd" and summary["device"] == "cpu"
    assert summary["versions"]["diffusers"] == "0.42.1"


def test_generate_with_the_tiny_wan_pipeline(df_python: Path, tmp_path: Path) -> None:
    """WanPipeline, the current text-to-video family (flow matching, UMT5, 4k + 1 frames)."""
    proc = deepfake(df_python, tmp_path, "generate", "--smoke", "--pipeline", "wan",
                    "--num-frames", "9", "--num-videos", "2", "--prompt", "a face talking")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    clips = jsonl(tmp_path / "outputs" / "generation.jsonl")
    assert [c["prompt"] for c in clips] == ["a face talking"] * 2
    for c in clips:
        assert video_shape(df_python, tmp_path / "outputs" / c["video"]) == [9, 32, 32]
    assert json.loads((tmp_path / "outputs" / "summary.json").read_text())["model"] == (
        "tiny-random:wan"
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic data dir and one face cache for the module: only the first run pays for
    writing the clips and finding the faces."""
    base = tmp_path_factory.mktemp("deepfake")
    return {"data": base / "data", "cache": base / "face_cache", "smoke": base / "smoke"}


def common(shared: dict[str, Path]) -> tuple[str, ...]:
    return ("--synthetic", "8", "--data-dir", str(shared["data"]), "--face-cache",
            str(shared["cache"]))  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(df_python: Path, shared: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """The training smoke run (ensemble, evaluation, benchmark), shared by the tests below."""
    t0 = time.monotonic()
    proc = deepfake(df_python, shared["smoke"], "train", "--smoke", *common(shared))
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 60, f"smoke run took {took:.1f}s"
    return proc


def test_train_smoke_run_writes_metrics_checkpoints_eval_plots_and_benchmark(
    smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path]
) -> None:
    out = shared["smoke"] / "outputs"
    assert "data: 16 synthetic clips written" in smoke_run.stdout
    rows = jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    keys = {"loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "val_f1", "lr",
            "seconds", "samples_per_s", "val_auc_cnn", "val_auc_vit"}  # fmt: skip
    for r in rows:
        assert keys <= r.keys() and r["samples_per_s"] > 0
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["lr"] < rows[0]["lr"]

    ckpts = sorted(p.name for p in (shared["smoke"] / "checkpoints").iterdir())
    assert ckpts == ["ckpt-best.pt", "ckpt-epoch-0001.pt", "ckpt-epoch-0002.pt",
                     "ckpt-epoch-0003.pt"]  # fmt: skip

    ev = json.loads((out / "eval.json").read_text())
    assert ev["split"] == "test" and set(ev["files"]) == {"cnn", "vit", "ensemble"}
    h = ev["headline"]
    assert h["model"] == "ensemble" and h["n"] == 4  # 2 real + 2 fake test clips
    # real faces vs faces under diffusion noise are easy to separate: a wiring check only
    assert ev["frames"]["ensemble"]["auc"] > 0.9, ev["frames"]["ensemble"]
    frames = ev["frames"]["ensemble"]
    (tn, fp), (fn, tp) = frames["confusion"]
    assert tn + fp + fn + tp == 16  # 4 clips x 4 frames
    assert frames["accuracy"] == pytest.approx((tn + tp) / 16)
    assert 0 <= ev["threshold"] <= 1  # chosen on the validation split
    assert png_size(out / "roc.png")[0] > 200 and png_size(out / "confusion.png")[0] > 200

    bench = json.loads((out / "benchmark.json").read_text())
    (fp32,) = bench["runs"]  # no amp run on a CPU
    assert fp32["precision"] == "fp32" and fp32["samples_per_s"] > 0 and fp32["batch"] == 16
    lat = fp32["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert bench["amp_speedup"] is None and bench["device"] == "cpu"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 3
    assert summary["members"] == {"cnn": "resnet50", "vit": "vit_b16"}
    assert summary["samples"] == {"train": 32, "val": 16, "test": 16}
    assert summary["faces"]["extracted"] == 16 and summary["faces"]["faces_found"] > 0
    assert summary["test"]["accuracy"] == h["accuracy"] and summary["samples_per_s"] > 0
    assert summary["device"] == "cpu" and summary["amp"] == "off"
    assert summary["peak_gpu_memory_mb"] is None and summary["resumed_from"] is None
    assert (out / "training.log").is_file()


@pytest.mark.full
def test_evaluate_and_benchmark_commands_on_a_saved_checkpoint(
    df_python: Path, smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    best = shared["smoke"] / "checkpoints" / "ckpt-best.pt"
    trained = json.loads((shared["smoke"] / "outputs" / "eval.json").read_text())
    proc = deepfake(df_python, tmp_path, "evaluate", "--checkpoint", str(best), "--data-dir",
                    str(shared["data"]), "--split", "test", "--face-cache", str(shared["cache"]),
                    "--threshold", str(trained["threshold"]))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ev = json.loads((tmp_path / "outputs" / "eval.json").read_text())
    # the same weights on the same (cached) crops score the same
    assert ev["files"]["ensemble"] == trained["files"]["ensemble"]
    assert ev["faces"]["cached"] == 4 and ev["faces"]["extracted"] == 0
    assert png_size(tmp_path / "outputs" / "roc.png")[0] > 0

    proc = deepfake(df_python, tmp_path, "benchmark", "--checkpoint", str(best), "--iters", "4",
                    "--batch-size", "8")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = json.loads((tmp_path / "outputs" / "benchmark.json").read_text())
    assert bench["img_size"] == 64 and bench["runs"][0]["batch"] == 8
    assert "benchmark fp32:" in proc.stdout


@pytest.mark.full
def test_sigterm_saves_a_checkpoint_and_resume_loses_and_repeats_no_epoch(
    df_python: Path, smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    args = ("train", *TINY, *common(shared), "--epochs", "4")
    # the reference also times training steps first: that must not change what it learns
    ref = deepfake(df_python, tmp_path / "ref", *args, "--amp-compare-steps", "2")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    speed = json.loads((tmp_path / "ref" / "outputs" / "summary.json").read_text())["train_speed"]
    assert speed["fp32_samples_per_s"] > 0 and speed["amp_speedup"] is None  # no AMP on a CPU

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(df_python), "-m", "deepfake", *args, "--epoch-seconds", "1.5"],
        cwd=WORKLOAD, env=_env(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    _, _, exit_seconds = sigterm_after_lines(
        proc, run / "outputs" / "metrics.jsonl", 2, wait_s=90, exit_timeout_s=60
    )
    stdout, stderr = proc.communicate()
    assert proc.returncode == 143, stdout + stderr
    assert exit_seconds < 5, f"took {exit_seconds:.1f}s to stop after SIGTERM"
    stopped_at = len(jsonl(run / "outputs" / "metrics.jsonl"))
    assert 2 <= stopped_at < 4
    assert f"checkpoint saved on SIGTERM at epoch {stopped_at}" in stdout
    ckpt = run / "checkpoints" / f"ckpt-epoch-{stopped_at:04d}.pt"
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == stopped_at
    assert not (run / "outputs" / "eval.json").exists()  # evaluation waits for the last epoch
    saved = tmp_path / "saved"  # the resumed run prunes old checkpoints; kept for elsewhere
    saved.mkdir()
    shutil.copy(ckpt, saved / ckpt.name)
    shutil.copy(run / "checkpoints" / "ckpt-best.pt", saved / "ckpt-best.pt")

    # a run killed -9 after its metrics line but before its checkpoint leaves a line ahead
    with open(run / "outputs" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": stopped_at + 1, "loss": 99.0}) + "\n")
    resumed = deepfake(df_python, run, *args, resume=ckpt)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from epoch {stopped_at}" in resumed.stdout
    rows = jsonl(run / "outputs" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # none lost, none repeated
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["resumed_from"] == stopped_at and summary["status"] == "completed"
    want = jsonl(tmp_path / "ref" / "outputs" / "metrics.jsonl")
    for got, exp in zip(rows, want, strict=True):  # exactly where the uninterrupted run went
        for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "lr"):
            assert got[k] == pytest.approx(exp[k], rel=1e-4, abs=1e-6), (got["epoch"], k)
    assert (run / "outputs" / "eval.json").is_file()

    # resumed on "another machine" (empty output and checkpoint dirs): the earlier epochs and
    # the best checkpoint come with it
    elsewhere = tmp_path / "elsewhere"
    again = deepfake(df_python, elsewhere, *args, resume=saved / ckpt.name)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = jsonl(elsewhere / "outputs" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in want], rel=1e-4)
    assert (elsewhere / "checkpoints" / "ckpt-best.pt").is_file()


@pytest.mark.full
def test_efficientnet_cnn_and_corrupt_videos_are_logged_and_skipped(
    df_python: Path, smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    fake = shared["data"] / "train" / "fake"
    good = sorted(fake.glob("*.mp4"))[0]
    bad = {"zz_empty.mp4": b"", "zz_garbage.avi": os.urandom(4096),
           "zz_truncated.mp4": good.read_bytes()[:300]}  # fmt: skip
    for name, raw in bad.items():
        (fake / name).write_bytes(raw)
    try:
        proc = deepfake(df_python, tmp_path, "train", *TINY, *common(shared), "--epochs", "1",
                        "--model", "cnn", "--cnn-backbone", "efficientnet_b0")  # fmt: skip
    finally:
        for name in bad:
            (fake / name).unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in bad:
        assert f"skipping corrupt or unreadable file {fake / name}" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "outputs" / "summary.json").read_text())
    assert sorted(Path(p).name for p in summary["skipped_files"]) == sorted(bad)
    assert summary["members"] == {"cnn": "efficientnet_b0"} and summary["epochs_done"] == 1
    assert summary["faces"]["cached"] == 16  # the good clips' crops came from the cache
    assert summary["benchmark_samples_per_s"] is None  # --bench-iters 0


def test_faces_command_writes_crops_and_resumes(
    df_python: Path, smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    for i, src in enumerate(sorted((shared["data"] / "test" / "real").glob("*.mp4"))):
        shutil.copy(src, clips / ("sub" if i else "") / src.name)
    (clips / "broken.mp4").write_bytes(b"\x00" * 100)
    proc = deepfake(df_python, tmp_path, "faces", "--input", str(clips), "--size", "48")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"skipping corrupt or unreadable file {clips / 'broken.mp4'}" in proc.stderr
    out = tmp_path / "outputs"
    crops = sorted((out / "faces").glob("*.png"))
    assert len(crops) == 16 and all(png_size(c) == (48, 48) for c in crops)  # 2 clips x 8
    rows = {r["file"]: r for r in jsonl(out / "faces.jsonl")}
    assert rows["broken.mp4"]["status"] == "unreadable" and len(rows) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_found"] > 8 and summary["unreadable"] == 1 and summary["frames"] == 16
    again = deepfake(df_python, tmp_path, "faces", "--input", str(clips), "--size", "48")
    assert again.returncode == 0 and "0 files read (3 done before)" in again.stdout
    fails = deepfake(df_python, tmp_path, "faces", "--input", str(tmp_path / "nowhere"))
    assert fails.returncode == 2 and "is not a folder" in fails.stderr


@pytest.mark.full
def test_bad_inputs_exit_2_with_one_clear_line(
    df_python: Path, smoke_run: subprocess.CompletedProcess[str], shared: dict[str, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    def fails(proc: subprocess.CompletedProcess[str], message: str) -> None:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr

    fails(deepfake(df_python, tmp_path, "train", *TINY), "--data-dir DIR is required")
    nowhere = tmp_path / "nowhere"
    fails(deepfake(df_python, tmp_path, "train", *TINY, "--data-dir", str(nowhere)),
          f"--data-dir {nowhere} does not exist")  # fmt: skip
    (tmp_path / "empty" / "misc").mkdir(parents=True)
    (tmp_path / "empty" / "misc" / "clip.mp4").write_bytes(b"")  # not in a class folder
    fails(deepfake(df_python, tmp_path, "train", *TINY, "--data-dir", str(tmp_path / "empty")),
          "no videos or images in real/fake class folders")  # fmt: skip

    bad = tmp_path / "ckpt-epoch-0003.pt"
    bad.write_bytes(b"not a checkpoint")
    fails(deepfake(df_python, tmp_path, "train", *TINY, *common(shared), resume=bad),
          f"cannot resume from {bad}")  # fmt: skip
    # a checkpoint of another architecture is refused, not half-loaded
    ensemble = shared["smoke"] / "checkpoints" / "ckpt-epoch-0003.pt"
    fails(deepfake(df_python, tmp_path, "train", *TINY, *common(shared), "--model", "vit",
                   resume=ensemble), "it holds")  # fmt: skip
    fails(deepfake(df_python, tmp_path, "evaluate", "--checkpoint", str(bad), "--data-dir",
                   str(shared["data"])), f"cannot load {bad}")  # fmt: skip
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# only a comment\n")
    fails(deepfake(df_python, tmp_path, "generate", "--smoke", "--prompts-file", str(prompts)),
          "has no prompt")  # fmt: skip
    proc = deepfake(df_python, tmp_path, "generate")
    assert proc.returncode == 2 and "--model-id ID" in proc.stderr
    # a model that cannot be had (offline here, as on a machine without internet)
    fails(deepfake(df_python, tmp_path, "generate", "--model-id", str(tmp_path / "no-model")),
          f"cannot load model {tmp_path / 'no-model'}")  # fmt: skip
    fails(deepfake(df_python, tmp_path, "train", *TINY, *common(shared), "--init", "pretrained"),
          "cannot build the pretrained ensemble detector")  # fmt: skip


def test_generate_smoke_profile_runs_through_the_launcher(df_python: Path, project: Path) -> None:
    """`launch run jobs/deepfake-generate.yaml --target local --profile smoke`, as a user runs
    it: the profile picks the process runtime and requirements-cpu.txt itself.

    The process runtime builds its virtualenv from that file with the base interpreter's site
    packages. PYTHONPATH hands it the packages of the cached test virtualenv, so pip finds the
    pins satisfied instead of installing torch and diffusers again for every fresh LAUNCH_HOME."""
    site = subprocess.run(
        [str(df_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/deepfake-generate.yaml", "--target", "local", "--profile",
         "smoke", "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0
    out = Path(rec["output_dir"]) / "outputs"
    assert len(jsonl(out / "generation.jsonl")) == 4
    assert len(list((out / "videos").glob("*.mp4"))) == 4
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert (Path(rec["output_dir"]) / "checkpoints" / "generation-state.json").is_file()
    assert took < 120, f"launch run --profile smoke took {took:.1f}s"


@pytest.mark.full
def test_train_smoke_profile_runs_inside_the_deepfake_image(
    project: Path, cpu_image_env: str
) -> None:
    """The training smoke job in the image built from images/deepfake/Dockerfile on the local
    base with requirements-cpu.txt (torch from the machine's CPU wheel through
    LAUNCH_PIP_EXTRA_ARGS): the image, the job spec and the workload agree."""
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/deepfake-train.yaml", "--target", "local", "--profile",
         "smoke", "--set", "targets.local.runtime=docker", "--json"],
        cwd=project, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    run = Path(rec["output_dir"])
    assert [m["epoch"] for m in jsonl(run / "outputs" / "metrics.jsonl")] == [1, 2, 3]
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["device"] == "cpu"
    assert summary["test"]["auc"] is not None
    assert png_size(run / "outputs" / "roc.png")[0] > 0
    assert (run / "outputs" / "benchmark.json").is_file()
    assert (run / "checkpoints" / "ckpt-best.pt").is_file()
