"""Train a deepfake detector on face crops (CNN, ViT or their ensemble), then evaluate the best
epoch on the test split and benchmark its inference, under the launch contract:

  LAUNCH_OUTPUT_DIR      metrics.jsonl (one JSON line per epoch), summary.json, eval.json,
                         roc.png, confusion.png, benchmark.json, training.log, face_cache/
                         (default ./outputs)
  LAUNCH_CHECKPOINT_DIR  ckpt-epoch-NNNN.pt after every epoch (newest 3 kept) + ckpt-best.pt,
                         all atomic (default ./checkpoints)
  LAUNCH_RESUME_FROM     continue from that checkpoint at the next epoch (exit 2 if unusable)
  SIGTERM / SIGINT       abandon the epoch in progress, save the last completed one, exit 143/130

Data: --data-dir DIR with real/fake class folders (videos or images; train/val/test folders
optional), or --synthetic N real and N fake clips written offline (the fakes blend frames of a
tiny random text-to-video pipeline over the face).

Usage (from workloads/deepfake):
  python3 -m deepfake train --data-dir DIR --model ensemble --init pretrained [--epochs 10]
  python3 -m deepfake train --smoke --synthetic 8
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import ckpt, files
from .data import FaceSet, FaceStats, load_split, scan, write_synthetic
from .files import EXIT_USAGE, STOP, Run, UsageError
from .loop import better, train_epoch, validate
from .models import BACKBONES, Detector, Spec, build, count_parameters, member_names, rebuild
from .runtime import Amp, device_name, peak_memory_mb, pick_device

# --smoke: tiny sizes, same code path; anything given explicitly still wins
SMOKE = {"epochs": 3, "frames": 4, "img_size": 64, "batch_size": 16, "tiny": True, "lr": 1e-3,
         "bench_iters": 5, "model": "ensemble"}  # fmt: skip
CNNS = [k for k, v in BACKBONES.items() if v[0] == "cnn"]
VITS = [k for k, v in BACKBONES.items() if v[0] == "vit"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m deepfake train", description=__doc__.split("\n")[0]
    )
    a = p.add_argument
    a("--data-dir", type=Path, default=None, help="real/fake class folders (videos or images)")
    a("--synthetic", type=int, default=0, metavar="N", help="write N real + N fake clips first")
    a("--model", choices=("cnn", "vit", "ensemble"), default="cnn")
    a("--cnn-backbone", choices=CNNS, default="resnet50")
    a("--vit-backbone", choices=VITS, default="vit_b16")
    a("--init", choices=("random", "pretrained"), default="random",
      help="pretrained: ImageNet weights from the hub (needs internet)")  # fmt: skip
    a("--tiny", action="store_true", help="tiny configs of the same architectures (CPU tests)")
    a("--epochs", type=int, default=10)
    a("--batch-size", type=int, default=32)
    a("--lr", type=float, default=1e-4, help="AdamW learning rate, cosine-annealed per epoch")
    a("--weight-decay", type=float, default=0.05)
    a("--frames", type=int, default=16, help="frames sampled evenly per video")
    a("--img-size", type=int, default=224, help="face crop size fed to the model")
    a("--max-files", type=int, default=0,
      help="use at most this many files per split (0: all; crops are held in memory)")  # fmt: skip
    a("--face-cache", type=Path, default=None, help="default OUTPUT/face_cache")
    a("--amp", choices=("auto", "off"), default="auto", help="mixed precision (CUDA only)")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--seed", type=int, default=0)
    a("--bench-iters", type=int, default=50, help="benchmark iterations after training (0: none)")
    a("--amp-compare-steps", type=int, default=0, metavar="N",
      help="first time N training steps in fp32 and (on CUDA) mixed precision")  # fmt: skip
    a("--epoch-seconds", type=float, default=0.0, help="pace epochs to at least this (demos)")
    a("--output-dir", type=Path, default=None, help="default $LAUNCH_OUTPUT_DIR or ./outputs")
    a("--smoke", action="store_true", help=f"tiny sizes for a CPU check: {SMOKE}")
    if "--smoke" in argv:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if (
        min(args.batch_size, args.frames, args.img_size) < 1
        or min(
            args.epochs, args.synthetic, args.bench_iters, args.max_files, args.amp_compare_steps
        )
        < 0  # fmt: skip
    ):
        p.error(
            "--batch-size/--frames/--img-size must be >= 1; --epochs/--synthetic/--bench-iters/"
            "--max-files/--amp-compare-steps >= 0"
        )
    if args.lr <= 0:
        p.error("--lr must be > 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    STOP.arm()
    run = Run(files.output_dir(args.output_dir), files.checkpoint_dir(), "training.log")
    try:
        return train(args, run)
    except UsageError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE


def load_data(args: argparse.Namespace, run: Run) -> tuple[dict[str, Any], FaceStats, Path]:
    """Face crops per split: {"train": (x, y, owner), "val": ..., "test": ... or None}."""
    if args.synthetic:
        root = args.data_dir or run.out / "synthetic_data"
        n = write_synthetic(root, args.synthetic, args.seed, size=max(96, args.img_size), length=8)
        run.log(f"data: {n} synthetic clips written under {root}" if n else f"data: {root}")
    elif args.data_dir is None:
        raise UsageError("--data-dir DIR is required (or --synthetic N for an offline check)")
    else:
        root = args.data_dir
    if not root.is_dir():
        raise UsageError(f"--data-dir {root} does not exist")
    items = scan(root)
    if not items:
        raise UsageError(f"no videos or images in real/fake class folders under {root}")
    faces = FaceSet(args.face_cache or run.out / "face_cache", args.frames, args.img_size,
                    lambda m: run.log(m, err=True))  # fmt: skip
    stats = FaceStats()
    splits: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        chosen = [i for i in items if i.split == split]
        if args.max_files and len(chosen) > args.max_files:
            # a fixed mix of both classes: by name hash, not by folder order
            chosen = sorted(chosen, key=lambda i: hashlib.sha1(i.path.name.encode()).digest())
            chosen = sorted(chosen[: args.max_files], key=lambda i: i.path)
        loaded = load_split(chosen, faces, stats, lambda: STOP.requested) if chosen else None
        if STOP.requested:
            return splits, stats, root
        splits[split] = loaded if loaded is not None and len(loaded[1]) else None
    for split in ("train", "val"):
        if splits[split] is None:
            raise UsageError(f"no readable file in the {split} split under {root}")
    if len(set(splits["train"][1].tolist())) < 2:
        raise UsageError(f"the train split under {root} needs both real and fake files")
    run.log(
        f"faces: {stats.files} files ({stats.extracted} read, {stats.cached} from cache, "
        f"{len(stats.skipped)} skipped), {stats.frames} frames, {stats.faces_found} with a face; "
        + ", ".join(f"{k} {len(v[1]) if v else 0}" for k, v in splits.items())
    )
    return splits, stats, root


def train(args: argparse.Namespace, run: Run) -> int:
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    resume_path = os.environ.get("LAUNCH_RESUME_FROM") or None
    state = None
    if resume_path:  # check it before the slow parts
        try:
            state = ckpt.load(Path(resume_path))
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise UsageError(f"cannot resume from {resume_path}: {reason}") from None
        want = member_names(args.model, args.cnn_backbone, args.vit_backbone)
        have = {k: v[0] for k, v in Spec.from_dict(state["spec"]).members.items()}
        if want != have:
            raise UsageError(f"cannot resume from {resume_path}: it holds {have}, not {want}")

    t_run = time.monotonic()
    splits, stats, root = load_data(args, run)
    if state is not None:  # the checkpoint's architecture, without downloading anything
        spec = Spec.from_dict(state["spec"])
        detector = rebuild(spec)
    else:
        try:
            detector, spec = build(
                args.model, args.cnn_backbone, args.vit_backbone, init=args.init, tiny=args.tiny,
                img_size=args.img_size,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - hub, file and config errors come in many types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(
                f"cannot build the {args.init} {args.model} detector: {first}"
            ) from None
    detector.to(device)
    opt = torch.optim.AdamW(detector.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.epochs, 1),
                                                       eta_min=args.lr * 0.05)  # fmt: skip
    amp = Amp.for_device(device, args.amp)
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config = {"model": args.model, "init": args.init, "frames": args.frames, "tiny": args.tiny,
              "img_size": args.img_size, "seed": args.seed, "args": plain}  # fmt: skip
    records: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 0
    resumed_from = None
    if state is not None:
        try:
            detector.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                amp.scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise UsageError(f"cannot resume from {resume_path}: {e}") from None
        if (state["config"]["frames"], state["config"]["img_size"]) != (
            args.frames,
            args.img_size,
        ):
            run.log(
                "warning: resuming with other --frames/--img-size than the checkpoint", err=True
            )
        records, best = list(state["records"]), state.get("best")
        start_epoch = resumed_from = state["epoch"]
        src_best = Path(resume_path).with_name(ckpt.BEST)  # type: ignore[arg-type]
        if src_best.is_file() and not (run.ckpt / ckpt.BEST).exists():
            shutil.copyfile(src_best, run.ckpt / ckpt.BEST)
        run.log(f"resumed from epoch {start_epoch} ({resume_path})")
        # metrics.jsonl := the checkpoint's epochs: lines a killed run wrote past its last
        # checkpoint go (they are redone), and a fresh output dir elsewhere gets the earlier ones
        files.write_jsonl(run.out / "metrics.jsonl", records)

    def snapshot(epoch: int) -> bytes:
        return ckpt.torch_bytes({
            "format": ckpt.FORMAT, "epoch": epoch, "model": detector.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": amp.scaler.state_dict() if amp.scaler.is_enabled() else None,
            "rng": ckpt.rng_state(), "spec": spec.to_dict(), "config": config,
            "records": records, "best": best, "time": time.time(),
        })  # fmt: skip

    speed = None
    if args.amp_compare_steps and not STOP.requested:
        from .bench import train_speed

        speed = train_speed(detector, args.img_size, device, args.batch_size,
                            args.amp_compare_steps)  # fmt: skip
        run.log(f"train speed: {speed}")
    params = count_parameters(detector)
    members = {k: v[0] for k, v in spec.members.items()}
    run.log(f"deepfake: {args.model} {members}, {params} params, device {device}, amp {amp.name}, "
            f"epochs {start_epoch + 1}..{args.epochs}")  # fmt: skip
    status, exit_code = "completed", 0
    train_seconds, samples = 0.0, 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    last = (start_epoch, snapshot(start_epoch)) if not STOP.requested else (start_epoch, b"")
    if STOP.requested or not splits:
        pass
    else:
        x_tr, y_tr = torch.from_numpy(splits["train"][0]), torch.from_numpy(splits["train"][1])
        x_val, y_val = torch.from_numpy(splits["val"][0]), splits["val"][1]
        for epoch in range(start_epoch + 1, args.epochs + 1):
            if STOP.requested:
                break
            t0 = time.monotonic()
            lr = opt.param_groups[0]["lr"]
            result = train_epoch(detector, opt, amp, x_tr, y_tr, batch_size=args.batch_size,
                                 seed=args.seed, epoch=epoch, device=device,
                                 should_stop=lambda: STOP.requested)  # fmt: skip
            if result is None:
                break
            loss, acc, seen = result
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.monotonic() - t0
            train_seconds += seconds
            samples += seen
            sched.step()
            record = {"epoch": epoch, "loss": round(loss, 6), "accuracy": round(acc, 6),
                      **validate(detector, x_val, y_val, args.batch_size * 2, device, amp),
                      "lr": lr, "seconds": round(seconds, 4),
                      "samples_per_s": round(seen / seconds, 2) if seconds > 0 else None,
                      "time": round(time.time(), 3)}  # fmt: skip
            files.append_jsonl(run.out / "metrics.jsonl", record)
            records.append(record)
            if better(record, best):
                best = {k: record[k] for k in ("epoch", "val_loss", "val_auc", "val_accuracy")}
                # best first: the agent resumes from the newest file, which must be the epoch's
                files.atomic_write_bytes(run.ckpt / ckpt.BEST, snapshot(epoch))
            last = (epoch, snapshot(epoch))
            ckpt.save(run.ckpt, *last)
            run.log(f"epoch {epoch}/{args.epochs} loss={loss:.4f} acc={acc:.3f} "
                    f"val_loss={record['val_loss']:.4f} val_acc={record['val_accuracy']:.3f} "
                    f"val_auc={record['val_auc']} {seconds:.2f}s")  # fmt: skip
            if args.epoch_seconds:
                while time.monotonic() < t0 + args.epoch_seconds and not STOP.requested:
                    time.sleep(0.05)

    evaluation = bench = None
    if STOP.requested:
        status = "interrupted"
        if last[1]:
            ckpt.save(run.ckpt, *last)
        sig = STOP.signum or signal.SIGTERM
        name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
        run.log(f"checkpoint saved on {name} at epoch {last[0]}" if last[1] else
                f"stopped by {name} before training started")  # fmt: skip
        exit_code = 128 + int(sig)
    else:
        evaluation, bench = finish(args, run, detector, splits, device)

    summary: dict[str, Any] = {
        "status": status,
        "epochs_done": last[0],
        "epochs_requested": args.epochs,
        "model": args.model, "members": members, "init": args.init, "params": params,
        "data_dir": str(root),
        "samples": {k: (len(v[1]) if v else 0) for k, v in splits.items()},
        "faces": stats.as_dict(),
        "skipped_files": stats.skipped,
        "final": records[-1] if records else None,
        "best": best,
        "test": evaluation["headline"] if evaluation else None,
        "evaluated_split": evaluation["split"] if evaluation else None,
        "benchmark_samples_per_s": bench["samples_per_s"] if bench else None,
        "benchmark_amp_speedup": bench["amp_speedup"] if bench else None,
        "train_speed": speed,
        "train_seconds": round(train_seconds, 3),
        "samples_per_s": round(samples / train_seconds, 2) if train_seconds > 0 else None,
        "total_seconds": round(time.monotonic() - t_run, 3),
        "device": device.type, "device_name": device_name(device), "amp": amp.name,
        "peak_gpu_memory_mb": peak_memory_mb(device),
        "resumed_from": resumed_from,
        "versions": files.versions(),
        "config": config,
    }  # fmt: skip
    files.atomic_write_json(run.out / "summary.json", summary)
    if status == "completed":
        acc = evaluation["headline"]["accuracy"] if evaluation else None
        run.log(f"done: {last[0]} epochs; {summary['evaluated_split']} accuracy {acc}")
    return exit_code


def finish(
    args: argparse.Namespace, run: Run, detector: Detector, splits: dict[str, Any],
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """Evaluate the best epoch on the test split (val when there is none), then benchmark."""
    from .bench import benchmark
    from .evaluate import choose_threshold, headline_model, predict, report

    best = run.ckpt / ckpt.BEST
    if best.is_file():
        detector.load_state_dict(ckpt.load(best)["model"])
    batch = args.batch_size * 2
    x_val, y_val, _ = splits["val"]
    val = predict(detector, torch.from_numpy(x_val), batch, device, Amp.off())
    threshold = choose_threshold(y_val, val[headline_model(val)])
    split = "test" if splits.get("test") is not None else "val"
    x, y, owner = splits[split]
    probs = val if split == "val" else predict(detector, torch.from_numpy(x), batch, device,
                                               Amp.off())  # fmt: skip
    evaluation = report(run.out, y, probs, owner, f"{split} split", threshold)
    evaluation["split"] = split
    evaluation["checkpoint"] = str(best) if best.is_file() else "last epoch"
    files.atomic_write_json(run.out / "eval.json", evaluation)
    h = evaluation["headline"]
    run.log(f"eval ({split}, per file, {h['model']}, threshold {threshold:.4f} from val): "
            f"accuracy {h['accuracy']:.4f} auc {h['auc']} f1 {h['f1']:.4f} "
            f"eer {h['eer']}")  # fmt: skip
    bench = None
    if args.bench_iters:
        bench = benchmark(detector, args.img_size, device, args.batch_size, args.bench_iters)
        files.atomic_write_json(run.out / "benchmark.json", bench)
        r = bench["runs"][0]
        run.log(f"benchmark: {bench['samples_per_s']} samples/s at batch {r['batch']}, "
                f"p50 {r['latency_ms']['p50']} ms at batch 1")  # fmt: skip
    return evaluation, bench


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
