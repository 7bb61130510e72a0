"""The handprep workload (workloads/handprep), run for real as `python -m handprep` subprocesses
with real MediaPipe 0.10.21 (its bundled hand models, repackaged offline into a .task) on
synthetic frames in which a drawn hand must really be found.

mediapipe 0.10.21 pins numpy<2 and protobuf<5, so it cannot share the project virtualenv: a
session fixture builds one from images/handprep/requirements.txt with --no-deps (the file is a
complete lock, as in the image), once per machine, under $LAUNCH_CACHE/test-venvs/.

Checked: a run's outputs (npz arrays, manifest, summary with frames/s and per-worker memory,
metrics), hands found in hand videos and not in noise, a corrupt frame and a missing video
logged and skipped; a rerun resumes (processes nothing), also after SIGTERM part-way and from a
checkpointed manifest elsewhere; --max_videos; a missing frames dir, bad annotations and a bad
model -> exit 2 with one message; the smoke profile inside the image built from
images/handprep/Dockerfile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workloads.signals import job_env
from tests.conftest import default_signals, launch_cmd
from tests.venvs import cached_venv

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "workloads" / "handprep"
REQUIREMENTS = REPO / "images" / "handprep" / "requirements.txt"


@pytest.fixture(scope="session")
def mp_python() -> Path:
    return cached_venv(
        "handprep", ["--no-deps"], requirements=REQUIREMENTS,
        what="mediapipe==0.10.21 and its pinned vision dependencies",
    )  # fmt: skip


def _env(tmp: Path, resume: Path | None = None) -> dict[str, str]:
    return job_env(tmp, resume, GLOG_minloglevel="2")


def prep(python: Path, tmp: Path, *args: str, resume: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(python), "-m", "handprep", *args], cwd=WORKLOAD, env=_env(tmp, resume),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(mp_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """4 hand videos + 2 noise videos of 6 frames, a corrupt jpg in hand_000, an annotated
    video without a folder, and one folder no annotation names."""
    root = tmp_path_factory.mktemp("handdata")
    code = (
        "import sys; from pathlib import Path; from handprep.synthetic import write_dataset; "
        "print(*write_dataset(Path(sys.argv[1]), 4, 2, 6, seed=1))"
    )
    proc = subprocess.run([str(mp_python), "-c", code, str(root)], cwd=WORKLOAD,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frames, ann = (Path(p) for p in proc.stdout.split())
    (frames / "stray_video").mkdir()
    (frames / "hand_001").joinpath("frame_0000.jpg").replace(frames / "stray_video" / "a.jpg")
    return frames, ann


def args_for(dataset: tuple[Path, Path], out: Path, *extra: str) -> tuple[str, ...]:
    frames, ann = dataset
    return ("--frames_dir", str(frames), "--annotations", str(ann), "--output", str(out),
            "--workers", "2", "--log_every", "2", *extra)  # fmt: skip


def test_landmarks_manifest_summary_and_skips(mp_python: Path, dataset: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "processed"
    t0 = time.monotonic()
    proc = prep(mp_python, tmp_path, *args_for(dataset, out))
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 60, f"took {took:.1f}s"
    assert "skipping video missing_video: no frames folder" in proc.stderr
    assert f"skipping unreadable frame {dataset[0] / 'hand_000' / 'frame_9999.jpg'}" in proc.stderr
    assert "1 folders without an annotation ignored" in proc.stdout
    assert "Traceback" not in proc.stderr

    rows = {r["video_id"]: r for r in jsonl(out / "manifest.jsonl")}
    assert set(rows) == {"hand_000", "hand_001", "hand_002", "hand_003", "noise_004", "noise_005", "missing_video"}  # fmt: skip
    assert rows["missing_video"]["status"] == "missing"
    assert rows["hand_000"]["bad_frames"] == ["frame_9999.jpg"] and rows["hand_000"]["frames"] == 7
    assert rows["hand_001"]["frames"] == 5  # one of its frames was moved to the stray folder
    assert len({r["pid"] for r in rows.values() if "pid" in r}) <= 2  # one landmarker per worker
    for vid in ("hand_000", "hand_001", "hand_002", "hand_003"):
        assert rows[vid]["frames_with_hand"] == rows[vid]["frames_read"], rows[vid]
        assert rows[vid]["label"] == "hand"
    for vid in ("noise_004", "noise_005"):
        assert rows[vid]["frames_with_hand"] == 0 and rows[vid]["label"] == "none"
    assert not (out / "stray_video.npz").exists()

    check = (
        "import numpy as np, sys, json; z = np.load(sys.argv[1]); "
        "print(json.dumps({k: [list(z[k].shape), str(z[k].dtype)] for k in z.files} | "
        "{'present': z['present'].tolist(), 'readable': z['readable'].tolist(), "
        "'in_unit': bool(((z['landmarks'][z['present']][..., :2] > -0.5) & (z['landmarks'][z['present']][..., :2] < 1.5)).all()), "
        "'hand': z['handedness'].tolist()}))"
    )
    got = json.loads(subprocess.run([str(mp_python), "-c", check, str(out / "hand_000.npz")],
                                    capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert got["landmarks"] == [[7, 2, 21, 3], "float32"]
    assert got["world_landmarks"] == [[7, 2, 21, 3], "float32"]
    assert got["present"][-1] == [False, False]  # the corrupt frame (sorted last)
    assert got["readable"] == [True] * 6 + [False]
    assert all(p[0] for p in got["present"][:6]) and got["in_unit"]
    assert all(h[0] in (0, 1) for h in got["hand"][:6])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["videos"] == 7
    assert summary["ok"] == 6 and summary["missing"] == 1 and summary["error"] == 0
    assert summary["frames"] == 7 + 5 + 6 + 6 + 6 + 6 and summary["bad_frames"] == 1
    assert summary["frames_with_hand"] == 6 + 5 + 6 + 6
    assert summary["frames_per_s"] > 0 and summary["workers"] == 2
    assert 50 < summary["worker_peak_rss_mb"] < 4000
    assert summary["mediapipe"] == "0.10.21"
    assert json.loads((tmp_path / "outputs" / "summary.json").read_text()) == summary
    progress = jsonl(tmp_path / "outputs" / "metrics.jsonl")
    assert progress and progress[-1]["videos_done"] == 7 and progress[-1]["frames_per_s"] > 0
    assert (tmp_path / "checkpoints" / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()  # fmt: skip

    # a rerun resumes: everything ok is skipped, only the missing video is looked at again
    again = prep(mp_python, tmp_path, *args_for(dataset, out))
    assert again.returncode == 0, again.stderr
    assert "(6 already done, 1 to do)" in again.stdout
    assert json.loads((out / "summary.json").read_text())["processed"] == 1


def test_sigterm_stops_and_a_rerun_finishes_without_repeating(mp_python: Path, dataset: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "processed"
    # one worker and every frame 3 times over (stride 1 of a long list): slow enough to stop
    proc = subprocess.Popen(
        [str(mp_python), "-m", "handprep", *args_for(dataset, out), "--workers", "1", "--log_every", "1"],
        cwd=WORKLOAD, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        manifest = out / "manifest.jsonl"
        while not (
            manifest.exists() and sum(1 for r in jsonl(manifest) if r["status"] == "ok") >= 1
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "no video finished"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stdout + stderr
    assert "stopped on SIGTERM" in stdout and "Traceback" not in stderr
    first = [r["video_id"] for r in jsonl(out / "manifest.jsonl") if r["status"] == "ok"]
    assert 1 <= len(first) < 6, first
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"

    rerun = prep(mp_python, tmp_path, *args_for(dataset, out))
    assert rerun.returncode == 0, rerun.stderr
    ok = [r["video_id"] for r in jsonl(out / "manifest.jsonl") if r["status"] == "ok"]
    assert sorted(ok) == ["hand_000", "hand_001", "hand_002", "hand_003", "noise_004", "noise_005"]  # fmt: skip
    assert len(ok) == len(set(ok))  # none processed twice

    # elsewhere (a fresh output dir): LAUNCH_RESUME_FROM, the checkpointed manifest, is honoured
    ckpt = tmp_path / "checkpoints" / "manifest.jsonl"
    other = prep(mp_python, tmp_path / "b", *args_for(dataset, tmp_path / "b" / "p"), resume=ckpt)
    assert other.returncode == 0, other.stderr
    assert "resuming: 6 videos done by an earlier run" in other.stdout
    assert json.loads((tmp_path / "b" / "p" / "summary.json").read_text())["ok"] == 0


def test_a_killed_worker_ends_the_run_with_a_message_not_a_hang(
    mp_python: Path, dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    """The OOM killer's case: a worker dies mid-run. A plain Pool would wait forever for its
    task; here the run ends with one message and exit 1, keeping what was recorded."""
    out = tmp_path / "processed"
    proc = subprocess.Popen(
        [str(mp_python), "-m", "handprep", *args_for(dataset, out), "--workers", "1"],
        cwd=WORKLOAD, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        manifest = out / "manifest.jsonl"
        while not (manifest.exists() and any("pid" in r for r in jsonl(manifest))):
            assert proc.poll() is None and time.monotonic() < deadline, "no video finished"
            time.sleep(0.02)
        pid = next(r["pid"] for r in jsonl(manifest) if "pid" in r)
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:  # the worker had already finished every video: nothing to test
        pytest.fail("the run ended before the worker was killed; make the dataset larger")
    assert proc.returncode == 1, stdout + stderr
    assert "error: a worker process died (out of memory? try fewer --workers)" in stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_max_videos_takes_the_first_k(mp_python: Path, dataset: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "processed"
    proc = prep(
        mp_python, tmp_path, *args_for(dataset, out, "--max_videos", "2", "--workers", "1")
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["video_id"] for r in jsonl(out / "manifest.jsonl")] == ["hand_000", "hand_001"]


def test_bad_inputs_exit_2_with_one_message(mp_python: Path, dataset: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    frames, ann = dataset
    cases: list[tuple[tuple[str, ...], str]] = [
        ((), "--frames_dir DIR is required"),
        (("--frames_dir", str(tmp_path / "nowhere")), f"--frames_dir {tmp_path / 'nowhere'} does not exist"),
        (("--frames_dir", str(frames), "--annotations", str(tmp_path / "none.json")), "does not exist"),
    ]  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases.append(
        (("--frames_dir", str(frames), "--annotations", str(bad)), "is not readable JSON")
    )
    model = tmp_path / "fake.task"
    model.write_bytes(b"PK not a zip")
    cases.append(
        (("--frames_dir", str(frames), "--model", str(model)), "is not a hand_landmarker.task")
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((("--frames_dir", str(empty)), "no videos"))
    for args, message in cases:
        proc = prep(mp_python, tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert ann.is_file()


def test_smoke_profile_runs_inside_the_handprep_image(project: Path, docker_env: str) -> None:
    """`launch run jobs/handprep.yaml --profile smoke` inside the image built from
    images/handprep/Dockerfile on the local base (--no-deps install of the lock: mediapipe
    imports and finds hands without jax or opencv-contrib). Only the base image is needed: no
    local wheels (so docker_env, whose build is cached by content across sessions)."""
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/handprep.yaml", "--target", "local", "--profile", "smoke",
         "--set", "targets.local.runtime=docker", "--json"],
        cwd=project, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    run = Path(rec["output_dir"])
    summary = json.loads((run / "outputs" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["ok"] == 6 and summary["missing"] == 1
    assert summary["frames_with_hand"] == 4 * 6 and summary["workers"] == 2
    assert (run / "checkpoints" / "manifest.jsonl").is_file()
    assert len(list((run / "outputs" / "processed").glob("*.npz"))) == 6
