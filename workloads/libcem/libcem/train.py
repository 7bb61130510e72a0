"""Train the graph-diffusion patch denoiser (noise -> denoise) and follow the launch contract:

  LAUNCH_OUTPUT_DIR      metrics.jsonl (one JSON line per epoch), summary.json (atomic, at the
                         end), samples_epoch_NNNN.png, loss_history.{json,npy},
                         model_best_loss.pt, training.log (default ./outputs)
  LAUNCH_CHECKPOINT_DIR  ckpt-epoch-NNNN.pt after every epoch, atomic, newest 3 kept
                         (default ./checkpoints)
  LAUNCH_RESUME_FROM     continue from that checkpoint at the next epoch (exit 2 if unusable)
  LAUNCH_INPUT_DIR       searched for CIFAR-10 when --data-dir is not given
  SIGTERM / SIGINT       abandon the epoch in progress, save the last completed one, exit 143/130

Data: CIFAR-10 when found (python-pickle batches), else procedural dead-leaves images.

Usage (from workloads/libcem):  python3 -m libcem.train --epochs 10 [--data-dir DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ck
from .data import DataError, dead_leaves, find_cifar, load_cifar, to_float
from .loop import Amp, evaluate, noisy_copy, sample_grid, train_epoch
from .model import GraphDiffusionDenoiser, ModelConfig, count_parameters
from .png import encode_png

EXIT_USAGE = 2
SAMPLES = 8  # images in each sample grid
# --smoke: tiny sizes, same code path; anything given explicitly still wins.
SMOKE = {"epochs": 4, "tiles": 192, "max_val": 48, "embed": 32, "batch_size": 32}


class Stop:
    """Set by SIGTERM/SIGINT, polled between batches (a flag is safe in a signal handler)."""

    signum: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: Any) -> None:
        if cls.signum is None:
            cls.signum = signum

    @classmethod
    def requested(cls) -> bool:
        return cls.signum is not None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m libcem.train", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--epochs", type=int, default=10)
    a("--batch-size", type=int, default=32)
    a("--lr", type=float, default=2e-3, help="AdamW learning rate, cosine-annealed per epoch")
    a("--noise", type=float, default=0.3, help="std of the additive Gaussian noise (0.3 = 30%%)")
    a("--dataset", choices=("auto", "cifar10", "deadleaves"), default="auto")
    a("--data-dir", type=Path, default=None, help="CIFAR-10 batches (folder or .tar.gz)")
    a("--max-train", type=int, default=0, help="use at most this many training images (0: all)")
    a("--max-val", type=int, default=1000, help="held-out images for loss/PSNR")
    a("--tiles", type=int, default=4096, help="dead-leaves training images")
    a("--image-size", type=int, default=32, help="dead-leaves image size")
    a("--patch", type=int, default=4)
    a("--stride", type=int, default=0, help="patch stride (default: --patch, no overlap)")
    a("--embed", type=int, default=64)
    a("--heads", type=int, default=4)
    a("--diffusion-steps", type=int, default=3)
    a("--seed", type=int, default=0)
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--amp", choices=("auto", "off"), default="auto", help="mixed precision (CUDA only)")
    a("--epoch-seconds", type=float, default=0.0, help="pace epochs to at least this (demos)")
    a("--output-dir", type=Path, default=None, help="default $LAUNCH_OUTPUT_DIR or ./outputs")
    a("--smoke", action="store_true", help=f"tiny sizes for a CPU check: {SMOKE}")
    if argv is None:
        argv = sys.argv[1:]
    if "--smoke" in argv:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if min(args.epochs, args.max_train, args.tiles) < 0 or min(args.batch_size, args.max_val) < 1:
        p.error("--epochs/--max-train/--tiles must be >= 0, --batch-size/--max-val >= 1")
    if args.noise <= 0 or args.lr <= 0 or args.patch < 1 or args.stride < 0:
        p.error("--noise and --lr must be > 0, --patch >= 1, --stride >= 0")
    args.stride = args.stride or args.patch
    return args


class Run:
    """Output files of one run: stdout and training.log get every line."""

    def __init__(self, out_dir: Path, ckpt_dir: Path) -> None:
        self.out, self.ckpt = out_dir, ckpt_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(out_dir / "training.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, msg: str, err: bool = False) -> None:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)
        self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        self._log.flush()


def load_images(args: argparse.Namespace, run: Run) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(dataset name, train uint8, held-out uint8). DataError when the data asked for is not
    there: an explicit --data-dir or --dataset cifar10 never falls back silently."""
    source: Path | None = None
    if args.dataset != "deadleaves":
        if args.data_dir is not None:
            if not args.data_dir.exists():
                raise DataError(f"--data-dir {args.data_dir} does not exist")
            source = find_cifar(args.data_dir)
            if source is None:
                raise DataError(f"no CIFAR-10 batches (data_batch_1..5) under {args.data_dir}")
        else:
            roots = [Path(os.environ.get("LAUNCH_INPUT_DIR") or "inputs"), Path("data")]
            source = next((s for r in roots if r.is_dir() and (s := find_cifar(r))), None)
            if source is None and args.dataset == "cifar10":
                raise DataError("CIFAR-10 not found in $LAUNCH_INPUT_DIR or ./data; --data-dir?")
    if source is not None:
        train, test = load_cifar(source, lambda m: run.log(m, err=True))
        if test is None:  # no test_batch: hold out the tail of the training images
            cut = max(1, train.shape[0] // 10)
            train, test = train[:-cut], train[-cut:]
        if args.max_train:
            train = train[: args.max_train]
        run.log(f"data: CIFAR-10 from {source}: {train.shape[0]} train images")
        return "cifar10", train, test[: args.max_val]
    if args.dataset == "auto":
        run.log("data: no CIFAR-10 found; using procedural dead-leaves images")
    n = args.max_train or args.tiles
    train = dead_leaves(n, args.image_size, seed=args.seed)
    held_out = dead_leaves(args.max_val, args.image_size, seed=args.seed + 7919)
    return "deadleaves", train, held_out


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as JSON/weights_only-safe values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def npy_bytes(values: list[float]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, Stop.handler)
    signal.signal(signal.SIGINT, Stop.handler)
    out_dir = args.output_dir or Path(os.environ.get("LAUNCH_OUTPUT_DIR") or "outputs")
    run = Run(out_dir, Path(os.environ.get("LAUNCH_CHECKPOINT_DIR") or "checkpoints"))
    resume_path = os.environ.get("LAUNCH_RESUME_FROM") or None

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        run.log("error: --device cuda but torch sees no CUDA device", err=True)
        return EXIT_USAGE
    else:
        device = torch.device(args.device)
    if device.type == "cpu":
        # exp(-d2/2s^2) yields denormals; without flushing them CPU epochs ran 10-50x slower
        torch.set_flush_denormal(True)
    else:
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)

    try:
        dataset, train_u8, val_u8 = load_images(args, run)
    except DataError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE
    if train_u8.shape[0] == 0:
        run.log("error: no training images", err=True)
        return EXIT_USAGE
    train_u8, val_u8 = train_u8.to(device), val_u8.to(device)
    # fixed held-out noise: PSNR is comparable across epochs and across resumed runs
    val_noisy = noisy_copy(to_float(val_u8), args.noise, torch.Generator().manual_seed(args.seed))

    cfg = ModelConfig(
        patch=args.patch,
        stride=args.stride,
        channels=train_u8.shape[1],
        embed=args.embed,
        heads=args.heads,
        steps=args.diffusion_steps,
    )
    try:
        model = GraphDiffusionDenoiser(cfg).to(device)
    except ValueError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(args.epochs, 1), eta_min=args.lr * 0.05
    )
    amp = Amp.for_device(device, args.amp)
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "psnr": []}
    records: list[dict[str, Any]] = []  # every metrics line so far, carried in checkpoints
    best_val = float("inf")
    start_epoch = 0
    resumed_from: int | None = None

    if resume_path:
        try:
            state = ck.load_checkpoint(Path(resume_path))
            if state["config"]["model"] != cfg.to_dict():
                raise ValueError(f"it was made with model {state['config']['model']}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                amp.scaler.load_state_dict(state["scaler"])
            ck.set_rng_state(state["rng"])
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            run.log(f"error: cannot resume from {resume_path}: {reason}", err=True)
            return EXIT_USAGE
        before = state["config"].get("args", {})
        changed = [
            f"--{k.replace('_', '-')} {before[k]} -> {getattr(args, k)}"
            for k in ("dataset", "noise", "seed", "batch_size", "lr")
            if k in before and before[k] != getattr(args, k)
        ]
        if changed:
            run.log(f"warning: resuming with other settings: {', '.join(changed)}", err=True)
        history = {k: list(v) for k, v in state["history"].items()}
        records = list(state.get("records", []))
        best_val = float(state.get("best_val", best_val))
        start_epoch = resumed_from = state["epoch"]
        run.log(f"resumed from epoch {start_epoch} ({resume_path})")
        # metrics.jsonl := the checkpoint's epochs: lines a killed run wrote past its last
        # checkpoint go (they are redone), and a fresh output dir elsewhere gets the earlier ones
        ck.atomic_write_bytes(
            run.out / "metrics.jsonl",
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode(),
        )

    def snapshot(epoch: int) -> bytes:
        return ck.torch_bytes(
            {
                "format": ck.FORMAT,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": amp.scaler.state_dict() if amp.scaler.is_enabled() else None,
                "rng": ck.rng_state(),
                "config": {"model": cfg.to_dict(), "args": plain_args(args)},
                "history": history,
                "records": records,
                "best_val": best_val,
                "time": time.time(),
            }
        )

    params = count_parameters(model)
    run.log(
        f"libcem: {dataset} {tuple(train_u8.shape)} held-out {val_u8.shape[0]}, device {device}"
        f", amp {amp.name}, {params} params, epochs {start_epoch + 1}..{args.epochs}"
    )
    last = (start_epoch, snapshot(start_epoch))  # what a stop must save: last completed epoch
    status, exit_code = "completed", 0
    t_run = time.monotonic()
    train_seconds, samples = 0.0, 0
    last_eval = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    for epoch in range(start_epoch + 1, args.epochs + 1):
        if Stop.requested():
            break
        t0 = time.monotonic()
        lr = opt.param_groups[0]["lr"]
        result = train_epoch(
            model, opt, amp, train_u8, batch_size=args.batch_size, noise=args.noise,
            seed=args.seed, epoch=epoch, should_stop=Stop.requested,
        )  # fmt: skip
        if result is None:
            break  # stopped mid-epoch; `last` is the state to save
        loss, seen = result
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.monotonic() - t0
        train_seconds += seconds
        samples += seen
        ev = evaluate(model, amp, val_u8, val_noisy, args.batch_size * 4)
        last_eval = ev
        sched.step()
        history["loss"].append(loss)
        history["val_loss"].append(ev.loss)
        history["psnr"].append(ev.psnr)
        gp = model.graph_params()
        record = {
            "epoch": epoch,
            "loss": round(loss, 6),
            "val_loss": round(ev.loss, 6),
            "loss_ratio": round(ev.loss / ev.noisy_loss, 4) if ev.noisy_loss else None,
            "psnr": round(ev.psnr, 3),
            "psnr_noisy": round(ev.psnr_noisy, 3),
            **{k: round(v, 5) for k, v in gp.items()},
            "lr": lr,
            "seconds": round(seconds, 4),
            "samples_per_s": round(seen / seconds, 1) if seconds > 0 else None,
            "time": round(time.time(), 3),
        }
        ck.append_jsonl(run.out / "metrics.jsonl", record)
        records.append(record)
        png = encode_png(sample_grid(model, amp, val_u8[:SAMPLES], val_noisy[:SAMPLES]))
        ck.atomic_write_bytes(run.out / f"samples_epoch_{epoch:04d}.png", png)
        ck.atomic_write_json(run.out / "loss_history.json", history)
        ck.atomic_write_bytes(run.out / "loss_history.npy", npy_bytes(history["loss"]))
        if ev.loss < best_val:
            best_val = ev.loss
            best = {"epoch": epoch, "val_loss": ev.loss, "config": cfg.to_dict()}
            ck.atomic_write_bytes(
                run.out / "model_best_loss.pt",
                ck.torch_bytes({**best, "model": model.state_dict()}),
            )
        last = (epoch, snapshot(epoch))
        ck.save_checkpoint(run.ckpt, *last)
        run.log(
            f"epoch {epoch}/{args.epochs} loss={loss:.5f} val={ev.loss:.5f} "
            f"psnr={ev.psnr:.2f}dB (noisy {ev.psnr_noisy:.2f}) sigma={gp['sigma']:.4f} "
            f"tau={gp['tau']:.4f} radius={gp['radius']:.4f} {seconds:.2f}s"
        )
        if args.epoch_seconds:
            while time.monotonic() < t0 + args.epoch_seconds and not Stop.requested():
                time.sleep(0.05)

    if Stop.requested():
        status = "interrupted"
        ck.save_checkpoint(run.ckpt, *last)
        sig = Stop.signum or signal.SIGTERM
        name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
        run.log(f"checkpoint saved on {name} at epoch {last[0]}")
        exit_code = 128 + int(sig)

    summary: dict[str, Any] = {
        "status": status,
        "epochs_done": last[0],
        "epochs_requested": args.epochs,
        "dataset": dataset,
        "train_images": int(train_u8.shape[0]),
        "held_out_images": int(val_u8.shape[0]),
        "final_loss": history["loss"][-1] if history["loss"] else None,
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "best_val_loss": best_val if best_val != float("inf") else None,
        "final_psnr": history["psnr"][-1] if history["psnr"] else None,
        "psnr_noisy": last_eval.psnr_noisy if last_eval else None,
        **model.graph_params(),
        "total_seconds": round(time.monotonic() - t_run, 4),
        "train_seconds": round(train_seconds, 4),
        "samples_per_s": round(samples / train_seconds, 1) if train_seconds > 0 else None,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": amp.name,
        "peak_gpu_memory_mb": (
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None
        ),
        "params": params,
        "resumed_from": resumed_from,
        "torch": torch.__version__,
        "config": {"model": cfg.to_dict(), "args": plain_args(args)},
    }
    ck.atomic_write_json(run.out / "summary.json", summary)
    if status == "completed":
        run.log(f"done: {last[0]} epochs, final psnr {summary['final_psnr']}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
