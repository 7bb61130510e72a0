"""Hand landmarks (MediaPipe HandLandmarker) for every frame of every video, on all CPU cores.

    python3 -m handprep --frames_dir FRAMES --annotations annotations.json --output OUT \
        [--workers N] [--max_videos K] [--model hand_landmarker.task] [--smoke]

Input: FRAMES/<video_id>/*.jpg|png. annotations.json ({video_id: label or {"label": ...}} or
a list of {"video_id": ..., ...}) is loaded once, in this process; workers get one label each.
Without --annotations every folder under FRAMES is a video.

Output (OUT, default $LAUNCH_OUTPUT_DIR/processed):
  <video_id>.npz   landmarks (T,H,21,3), world_landmarks, present (T,H), handedness (T,H:
                   0 left, 1 right, -1 none), scores, readable (T,), frames (names)
  manifest.jsonl   one line per finished video (ok | error | missing): a rerun skips every
                   video listed ok, so it resumes where the last run stopped
  summary.json     videos, ok/failed/missing, frames, frames/s, workers, peak RSS per worker
and $LAUNCH_OUTPUT_DIR/metrics.jsonl (a progress line every --log_every videos). The manifest is
also copied to $LAUNCH_CHECKPOINT_DIR; LAUNCH_RESUME_FROM (such a copy) skips its ok videos.
SIGTERM/SIGINT: stop taking videos, record those in flight, exit 143/130. Bad input: exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from . import worker
from .files import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl
from .model import ModelError, bundled_task, check_task

EXIT_USAGE = 2
SMOKE = {"hand_videos": 4, "noise_videos": 2, "frames": 6}


class InputError(Exception):
    """Bad input; the message is the whole story (exit 2, no traceback)."""


class Stop:
    signum: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: Any) -> None:
        if cls.signum is None:
            cls.signum = signum


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m handprep", description=__doc__.split("\n")[0])
    a = p.add_argument
    # the seed's underscore spellings, and the dashed ones every other workload uses
    a("--frames_dir", "--frames-dir", type=Path, default=None)
    a("--annotations", type=Path, default=None)
    a("--output", type=Path, default=None, help="default $LAUNCH_OUTPUT_DIR/processed")
    a("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    a("--max_videos", "--max-videos", type=int, default=0, help="the first K videos only")
    a("--model", type=Path, default=None, help="hand_landmarker.task (default: built offline)")
    a("--model_variant", "--model-variant", choices=("full", "lite"), default="full")
    a("--num_hands", "--num-hands", type=int, default=2)
    a("--min_conf", "--min-conf", type=float, default=0.3)
    a("--stride", type=int, default=1, help="every N-th frame")
    a("--log_every", "--log-every", type=int, default=100, help="videos per progress line")
    a("--smoke", action="store_true", help=f"synthetic frames {SMOKE}, same code path")
    args = p.parse_args(argv)
    if args.workers < 1 or args.num_hands < 1 or args.stride < 1 or args.max_videos < 0:
        p.error("--workers, --num_hands and --stride must be >= 1, --max_videos >= 0")
    if not 0 < args.min_conf <= 1:
        p.error("--min_conf must be in (0, 1]")
    args.log_every = max(1, args.log_every)
    return args


def load_annotations(path: Path) -> dict[str, Any]:
    """video_id -> label, from the formats described in the module docstring."""
    if not path.is_file():
        raise InputError(f"--annotations {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--annotations {path} is not readable JSON ({e})") from None
    labels: dict[str, Any] = {}
    if isinstance(data, dict):
        items = data.get("videos", data) if isinstance(data.get("videos"), list) else data
    else:
        items = data
    if isinstance(items, dict):
        for vid, value in items.items():
            labels[str(vid)] = value.get("label", value) if isinstance(value, dict) else value
    elif isinstance(items, list):
        for i, entry in enumerate(items):
            key = next(
                (k for k in ("video_id", "id", "video") if isinstance(entry, dict) and k in entry),
                None,
            )
            if key is None:
                raise InputError(f"--annotations {path}: entry {i} has no video_id/id/video")
            labels[str(entry[key])] = entry.get("label")
    else:
        raise InputError(f"--annotations {path}: expected an object or a list")
    return labels


def plan_videos(args: argparse.Namespace) -> tuple[list[tuple[str, Any]], int]:
    """[(video_id, label)] to consider, and how many folders no annotation names."""
    frames_dir: Path = args.frames_dir
    if not frames_dir.is_dir():
        raise InputError(f"--frames_dir {frames_dir} does not exist or is not a folder")
    folders = {p.name for p in frames_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if args.annotations is not None:
        labels = load_annotations(args.annotations)
        videos = sorted(labels.items())
        unannotated = len(folders - labels.keys())
    else:
        videos = [(name, None) for name in sorted(folders)]
        unannotated = 0
    if not videos:
        raise InputError(
            f"no videos: {frames_dir} has no <video_id>/ folders"
            + (" and the annotations list none" if args.annotations else "")
        )
    if args.max_videos:
        videos = videos[: args.max_videos]
    return videos, unannotated


def resolve_model(args: argparse.Namespace, out: Path) -> Path:
    if args.model is not None:
        return check_task(args.model)
    return bundled_task(out / ".model", args.model_variant)


def log(msg: str, err: bool = False) -> None:
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, Stop.handler)
    signal.signal(signal.SIGINT, Stop.handler)
    job_out = Path(os.environ.get("LAUNCH_OUTPUT_DIR") or "outputs")
    out: Path = args.output or job_out / "processed"
    ckpt_dir = Path(os.environ.get("LAUNCH_CHECKPOINT_DIR") or "checkpoints")
    try:
        if args.smoke and args.frames_dir is None:
            from .synthetic import write_dataset

            args.frames_dir, args.annotations = write_dataset(
                job_out / "smoke_data",
                SMOKE["hand_videos"],
                SMOKE["noise_videos"],
                SMOKE["frames"],
            )
            args.log_every = min(args.log_every, 2)
            log(f"smoke: synthetic frames in {args.frames_dir}")
        if args.frames_dir is None:
            raise InputError("--frames_dir DIR is required (or --smoke for synthetic frames)")
        videos, unannotated = plan_videos(args)
        out.mkdir(parents=True, exist_ok=True)
        job_out.mkdir(parents=True, exist_ok=True)
        model = resolve_model(args, out)
    except (InputError, ModelError) as e:
        log(f"error: {e}", err=True)
        return EXIT_USAGE

    manifest = out / "manifest.jsonl"
    done = {r["video_id"] for r in read_jsonl(manifest) if r.get("status") == "ok"}
    resumed_from = os.environ.get("LAUNCH_RESUME_FROM") or None
    if resumed_from:
        earlier = {
            r["video_id"] for r in read_jsonl(Path(resumed_from)) if r.get("status") == "ok"
        }
        log(f"resuming: {len(earlier)} videos done by an earlier run ({resumed_from})")
        done |= earlier
    todo = [(vid, label) for vid, label in videos if vid not in done]
    log(
        f"handprep: {len(videos)} videos ({len(videos) - len(todo)} already done, {len(todo)} "
        f"to do), {args.workers} workers, model {model.name}"
        + (f"; {unannotated} folders without an annotation ignored" if unannotated else "")
    )
    tasks = [
        worker.Task(vid, str(args.frames_dir / vid), str(out / f"{vid}.npz"), label, args.stride)
        for vid, label in todo
    ]
    totals = {
        "ok": 0,
        "error": 0,
        "missing": 0,
        "frames": 0,
        "frames_read": 0,
        "frames_with_hand": 0,
        "bad_frames": 0,
    }
    failed: list[dict[str, Any]] = []
    peak_rss = 0.0
    t0 = time.monotonic()

    def record(row: dict[str, Any]) -> None:
        nonlocal peak_rss
        append_jsonl(manifest, row)
        totals[row["status"]] += 1
        if row["status"] != "ok":
            failed.append({"video_id": row["video_id"], "error": row.get("error")})
            log(f"skipping video {row['video_id']}: {row.get('error')}", err=True)
            return
        for k in ("frames", "frames_read", "frames_with_hand"):
            totals[k] += row[k]
        totals["bad_frames"] += len(row["bad_frames"])
        for name in row["bad_frames"]:
            log(f"skipping unreadable frame {args.frames_dir / row['video_id'] / name}", err=True)
        peak_rss = max(peak_rss, row.get("worker_rss_mb") or 0.0)

    def progress() -> None:
        elapsed = time.monotonic() - t0
        processed = totals["ok"] + totals["error"] + totals["missing"]
        line = {
            "videos_done": len(videos) - len(todo) + processed,
            "videos_total": len(videos),
            "ok": totals["ok"],
            "failed": totals["error"] + totals["missing"],
            "frames": totals["frames"],
            "frames_per_s": round(totals["frames"] / elapsed, 2) if elapsed > 0 else None,
            "elapsed_s": round(elapsed, 3),
            "time": round(time.time(), 3),
        }
        append_jsonl(job_out / "metrics.jsonl", line)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if manifest.is_file():
            atomic_write_bytes(ckpt_dir / "manifest.jsonl", manifest.read_bytes())
        log(
            f"progress: {line['videos_done']}/{len(videos)} videos, "
            f"{line['frames_per_s']} frames/s"
        )

    status, broken = "completed", None
    runnable: list[worker.Task] = []
    for task in tasks:  # a missing folder is a logged skip, decided here without a worker
        if Path(task.folder).is_dir():
            runnable.append(task)
        else:
            record(
                {
                    "video_id": task.video_id,
                    "label": task.label,
                    "status": "missing",
                    "error": f"no frames folder {task.folder}",
                }
            )
    if runnable and not Stop.signum:
        broken = run_pool(runnable, args, model, record, progress)
    if Stop.signum:
        status = "interrupted"
    elif broken:
        status = "failed"
        log(f"error: {broken}", err=True)
    progress()
    elapsed = time.monotonic() - t0
    import mediapipe as mp

    summary = {
        "status": status,
        "videos": len(videos),
        "already_done": len(videos) - len(todo),
        "processed": totals["ok"] + totals["error"] + totals["missing"],
        **totals,
        "failed": failed,
        "unannotated_folders": unannotated,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(totals["frames"] / elapsed, 2) if elapsed > 0 else None,
        "videos_per_s": round(totals["ok"] / elapsed, 3) if elapsed > 0 else None,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "worker_peak_rss_mb": peak_rss or None,
        "device": "cpu",
        "model": model.name,
        "mediapipe": mp.__version__,
        "resumed_from": resumed_from,
        "output": str(out),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    atomic_write_json(out / "summary.json", summary)
    if out.resolve() != job_out.resolve():
        shutil.copyfile(out / "summary.json", job_out / "summary.json")
    if status == "interrupted":
        sig = Stop.signum or signal.SIGTERM
        log(
            f"stopped on {'SIGINT' if sig == signal.SIGINT else 'SIGTERM'}: "
            f"{summary['processed']} videos recorded, a rerun resumes"
        )
        return 128 + int(sig)
    log(
        f"done: {totals['ok']} ok, {totals['error'] + totals['missing']} failed, "
        f"{totals['frames']} frames, {summary['frames_per_s']} frames/s"
    )
    return 1 if status == "failed" else 0


def run_pool(
    tasks: list[worker.Task], args: argparse.Namespace, model: Path, record: Any, progress: Any
) -> str | None:
    """Run every task on a spawn pool; None, or why the pool broke (a worker was killed).

    At most 4 tasks per worker are queued, so 200k videos do not become 200k futures."""
    pending: set[Future[dict[str, Any]]] = set()
    queue = iter(tasks)
    count = 0
    pool = ProcessPoolExecutor(
        max_workers=args.workers,
        mp_context=get_context("spawn"),
        initializer=worker.init_worker,
        initargs=(str(model), args.num_hands, args.min_conf),
    )
    try:
        while True:
            while not Stop.signum and len(pending) < 4 * args.workers:
                task = next(queue, None)
                if task is None:
                    break
                pending.add(pool.submit(worker.process_video, task, args.num_hands))
            if not pending:
                return None
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                if fut.cancelled():
                    continue
                try:
                    row = fut.result()
                except BrokenProcessPool:
                    if Stop.signum:  # the group's SIGTERM ended the workers too
                        continue
                    return "a worker process died (out of memory? try fewer --workers)"
                record(row)
                count += 1
                if count % args.log_every == 0:
                    progress()
            if Stop.signum:
                for fut in pending:
                    fut.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
