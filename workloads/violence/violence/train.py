"""Train the violence detector (VGG19 frame features -> LSTM + attention) under the launch
contract:

  LAUNCH_OUTPUT_DIR      metrics.jsonl (one JSON line per epoch), summary.json (at the end),
                         best_model.keras, training.log, tensorboard/, feature_cache/ (default
                         ./outputs)
  LAUNCH_CHECKPOINT_DIR  ckpt-epoch-NNNN.npz after every epoch (newest 3 kept) + ckpt-best.npz,
                         all atomic (default ./checkpoints)
  LAUNCH_RESUME_FROM     continue from that checkpoint at the next epoch (exit 2 if unusable)
  SIGTERM / SIGINT       abandon the epoch in progress, save the last completed one, exit 143/130

Data: --data-dir DIR with class folders (RWF-2000: train|val/Fight|NonFight/*.avi), or
--synthetic N clips per class written as real video files (offline checks).

Usage (from workloads/violence):
  python3 -m violence.train --data-dir DIR [--epochs 30] [--weights imagenet] [--xla]
  python3 -m violence.train --smoke --synthetic 12
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .features import Extractor, load_features
from .videos import Video, scan, write_synthetic

EXIT_USAGE = 2
# --smoke: tiny sizes, same code path; anything given explicitly still wins.
SMOKE = {"epochs": 3, "frames": 8, "img_size": 64, "batch_size": 8, "units": 32,
         "warmup_epochs": 1}  # fmt: skip


class Stop:
    """Set by SIGTERM/SIGINT, polled between batches and videos (a flag is signal-safe)."""

    signum: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: Any) -> None:
        if cls.signum is None:
            cls.signum = signum

    @classmethod
    def requested(cls) -> bool:
        return cls.signum is not None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m violence.train", description=__doc__.split("\n")[0]
    )
    a = p.add_argument
    a("--data-dir", type=Path, default=None, help="videos in Fight/NonFight class folders")
    a("--synthetic", type=int, default=0, metavar="N", help="write N synthetic clips per class")
    a("--epochs", type=int, default=30)
    a("--batch-size", type=int, default=32, help="global batch (split over replicas)")
    a("--lr", type=float, default=1e-3, help="peak learning rate (warmup, then cosine)")
    a("--warmup-epochs", type=float, default=3)
    a("--label-smoothing", type=float, default=0.1)
    a("--focal-gamma", type=float, default=2.0, help="0: plain cross-entropy")
    a("--focal-alpha", type=float, default=0.25)
    a("--no-class-weights", action="store_true", help="do not weigh classes by frequency")
    a("--clipnorm", type=float, default=1.0, help="gradient clipping (per-variable norm)")
    a("--frames", type=int, default=20, help="frames sampled evenly per video")
    a("--img-size", type=int, default=224, help="frame size fed to VGG19")
    a("--weights", choices=("none", "imagenet"), default="none",
      help="VGG19 weights: imagenet downloads them; none: random, offline")  # fmt: skip
    a("--extract-batch", type=int, default=32, help="frames per VGG19 call")
    a("--units", type=int, default=128, help="LSTM units")
    a("--dropout", type=float, default=0.3)
    a("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
      default="auto", help="auto: mixed_float16 on tensor-core GPUs, else float32")  # fmt: skip
    a("--xla", action="store_true", help="XLA-compile the training step")
    a("--cpu-replicas", type=int, default=1, help="no GPU: mirror over N logical CPUs (tests)")
    a("--feature-cache", type=Path, default=None, help="default OUTPUT/feature_cache")
    a("--seed", type=int, default=0)
    a("--epoch-seconds", type=float, default=0.0, help="pace epochs to at least this (demos)")
    a("--output-dir", type=Path, default=None, help="default $LAUNCH_OUTPUT_DIR or ./outputs")
    a("--smoke", action="store_true", help=f"tiny sizes for a CPU check: {SMOKE}")
    argv = sys.argv[1:] if argv is None else argv
    if "--smoke" in argv:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if min(args.epochs, args.synthetic) < 0 or min(args.batch_size, args.frames) < 1:
        p.error("--epochs/--synthetic must be >= 0, --batch-size/--frames >= 1")
    if args.img_size < 32 or args.lr <= 0 or args.cpu_replicas < 1:
        p.error("--img-size must be >= 32 (VGG19), --lr > 0, --cpu-replicas >= 1")
    return args


class Run:
    """Output files of one run: stdout/stderr and training.log get every line."""

    def __init__(self, out_dir: Path, ckpt_dir: Path) -> None:
        self.out, self.ckpt = out_dir, ckpt_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(out_dir / "training.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, msg: str, err: bool = False) -> None:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)
        self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        self._log.flush()


def find_videos(args: argparse.Namespace, run: Run) -> list[Video] | str:
    """The dataset's videos, or an error message (-> exit 2). --data-dir is never guessed."""
    root = args.data_dir
    if args.synthetic:
        root = root or run.out / "synthetic_videos"
        n = write_synthetic(root, args.synthetic, args.seed)
        run.log(f"data: {n} synthetic clips written under {root} ({args.synthetic} per class)")
    if root is None:
        return "--data-dir DIR is required (videos in Fight/, NonFight/ folders), or --synthetic N"
    if not root.is_dir():
        return f"--data-dir {root} does not exist or is not a folder"
    videos = scan(root)
    if not videos:
        return f"no videos in Fight/NonFight (or Violence/NonViolence) folders under {root}"
    return videos


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by ranks (ties averaged); None when only one class is present."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    for s in np.unique(score):  # average the ranks of tied scores
        tie = score == s
        ranks[tie] = ranks[tie].mean()
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def val_scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    pred = probs.argmax(1)
    tp = int(((pred == 1) & (y == 1)).sum())
    prec = tp / max(int((pred == 1).sum()), 1)
    rec = tp / max(int((y == 1).sum()), 1)
    a = auc(y, probs[:, 1])
    return {"val_precision": round(prec, 4), "val_recall": round(rec, 4),
            "val_auc": round(a, 4) if a is not None else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, Stop.handler)
    signal.signal(signal.SIGINT, Stop.handler)
    out_dir = args.output_dir or Path(os.environ.get("LAUNCH_OUTPUT_DIR") or "outputs")
    run = Run(out_dir, Path(os.environ.get("LAUNCH_CHECKPOINT_DIR") or "checkpoints"))
    found = find_videos(args, run)  # before importing TF: a bad --data-dir fails in a second
    if isinstance(found, str):
        run.log(f"error: {found}", err=True)
        return EXIT_USAGE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .loop import setup, train  # imports tensorflow (~3 s)

    # devices, strategy and precision policy first: TF fixes its devices on first use (VGG19)
    env = setup(args, run)

    cache = args.feature_cache or run.out / "feature_cache"
    extractor = Extractor(args.img_size, args.weights, args.extract_batch, args.seed)
    t0 = time.monotonic()
    loaded = load_features(
        found, cache, extractor, args.frames, args.seed,
        log=lambda m: run.log(m, err=True), should_stop=Stop.requested,
    )  # fmt: skip
    if loaded is None:
        run.log("stopped during feature extraction (the extracted videos are cached)")
        return 128 + int(Stop.signum or signal.SIGTERM)
    videos, feats, stats = loaded
    fps = stats.frames / stats.cnn_seconds if stats.cnn_seconds else None
    run.log(
        f"features: {stats.extracted} videos extracted by VGG19, {stats.cached} from cache "
        f"{cache}, {len(stats.failed)} skipped, {time.monotonic() - t0:.1f}s"
        + (f" ({fps:.1f} frames/s)" if fps else "")
    )
    labels = np.array([v.label for v in videos], dtype=np.int64)
    is_val = np.array([v.split == "val" for v in videos])
    if is_val.all() or not is_val.any() or len(np.unique(labels[~is_val])) < 2:
        run.log("error: need training videos of both classes and some validation videos "
                f"({len(videos)} usable, {len(stats.failed)} skipped)", err=True)  # fmt: skip
        return EXIT_USAGE
    data = {
        "x_train": feats[~is_val], "y_train": labels[~is_val],
        "x_val": feats[is_val], "y_val": labels[is_val],
        "skipped": stats.failed,
        "features": {"extracted": stats.extracted, "cached": stats.cached,
                     "skipped": len(stats.failed), "cnn_seconds": round(stats.cnn_seconds, 3),
                     "frames_per_s": round(fps, 1) if fps else None, "cache_dir": str(cache)},
    }  # fmt: skip
    return train(args, run, env, data, Stop, val_scores)


if __name__ == "__main__":
    sys.exit(main())
