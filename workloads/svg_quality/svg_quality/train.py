"""Train the SVG quality predictor (SSIM of a VTracer tracing from ResNet-50 features + its 8
parameters) and follow the launch contract:

  LAUNCH_OUTPUT_DIR      metrics.jsonl (a line per epoch), summary.json, best.pth, exports/
                         (model.torchscript.pt, model.onnx), inference_benchmark.json,
                         data/ (labels + feature caches, unless --data-dir), training.log
  LAUNCH_CHECKPOINT_DIR  ckpt-epoch-NNNN.pt after every epoch, atomic, newest 3 kept
  LAUNCH_RESUME_FROM     continue at the next epoch (early-stopping state included); exit 2 if
                         unusable
  SIGTERM / SIGINT       abandon the epoch in progress, save the last completed one, exit 143/130

Usage (from workloads/svg_quality):
  python3 -m svg_quality.train --images DIR | --synthetic N [--backbone microsoft/resnet-50]
  python3 -m svg_quality.train --smoke        # tiny sizes, random-weight ResNet-50, same path
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ck
from .export import export_and_check, latency, throughput_compare
from .features import Backbone, BackboneError, cached_features, extract, to_tensor
from .labels import DataError, load_images, make_labels, normalize_params, synthetic_logo
from .loop import Amp, evaluate, train_epoch
from .model import QualityPredictor, count_parameters

EXIT_USAGE = 2
SMOKE = {
    "synthetic": 24,
    "per_image": 8,
    "image_size": 64,
    "feature_size": 64,
    "epochs": 6,
    "batch_size": 32,
    "patience": 3,
    "latency_iters": 30,
    "backbone": "random",
}


class Stop:
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
        prog="python3 -m svg_quality.train", description=__doc__.split("\n")[0]
    )
    a = p.add_argument
    a("--images", type=Path, default=None, help="folder of PNG/JPG logos (recursive)")
    a("--synthetic", type=int, default=0, help="N seeded synthetic logos instead of --images")
    a("--max-images", type=int, default=0, help="use at most this many images (0: all)")
    a("--per-image", type=int, default=16, help="random VTracer parameter sets per image")
    a("--image-size", type=int, default=128, help="images are traced at this size")
    a("--data-dir", type=Path, default=None, help="label/feature caches (default OUTPUT/data)")
    a("--backbone", default="microsoft/resnet-50", help="HF model id, or `random` (offline)")
    a("--feature-size", type=int, default=224, help="ResNet input size")
    a("--epochs", type=int, default=50)
    a("--batch-size", type=int, default=64)
    a("--lr", type=float, default=1e-3)
    a("--weight-decay", type=float, default=1e-4)
    a("--dropout", type=float, default=0.2)
    a("--clip", type=float, default=1.0, help="gradient-norm clipping")
    a("--patience", type=int, default=8, help="epochs without a better val Pearson before stop")
    a(
        "--amp",
        choices=("auto", "fp16", "bf16", "off"),
        default="auto",
        help="auto: fp16 + GradScaler on CUDA, off on CPU",
    )
    a("--compare-amp", action="store_true", help="also time fp32 vs AMP training (summary)")
    a("--latency-iters", type=int, default=200)
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--seed", type=int, default=0)
    a("--epoch-seconds", type=float, default=0.0, help="pace epochs to at least this (tests)")
    a("--output-dir", type=Path, default=None, help="default $LAUNCH_OUTPUT_DIR or ./outputs")
    a("--smoke", action="store_true", help=f"tiny sizes for a CPU check: {SMOKE}")
    argv = sys.argv[1:] if argv is None else argv
    if "--smoke" in argv:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if min(args.per_image, args.batch_size, args.image_size, args.feature_size) < 1:
        p.error("--per-image, --batch-size, --image-size and --feature-size must be >= 1")
    if args.epochs < 0 or args.patience < 1 or args.synthetic < 0 or args.lr <= 0:
        p.error("--epochs >= 0, --patience >= 1, --synthetic >= 0 and --lr > 0 please")
    return args


class Run:
    def __init__(self, out_dir: Path, ckpt_dir: Path) -> None:
        self.out, self.ckpt = out_dir, ckpt_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(out_dir / "training.log", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, msg: str, err: bool = False) -> None:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)
        self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        self._log.flush()


def split_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image indices for train/val/test (80/10/10, at least one each): validation and test
    images are never seen in training, so correlation measures generalisation to new logos."""
    if n < 3:
        raise DataError(f"need at least 3 images (train/val/test), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, n // 10)
    return order[2 * k :], order[:k], order[k : 2 * k]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, Stop.handler)
    signal.signal(signal.SIGINT, Stop.handler)
    out_dir = args.output_dir or Path(os.environ.get("LAUNCH_OUTPUT_DIR") or "outputs")
    run = Run(out_dir, Path(os.environ.get("LAUNCH_CHECKPOINT_DIR") or "checkpoints"))
    data_dir = args.data_dir or out_dir / "data"
    resume_path = os.environ.get("LAUNCH_RESUME_FROM") or None
    if args.device == "cuda" and not torch.cuda.is_available():
        run.log("error: --device cuda but torch sees no CUDA device", err=True)
        return EXIT_USAGE
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    amp = Amp.choose(device, args.amp)
    warn = lambda m: run.log(f"warning: {m}", err=True)  # noqa: E731
    t_run = time.monotonic()

    try:
        if args.images is not None:
            names, images = load_images(args.images, args.image_size, args.max_images, warn)
        elif args.synthetic:
            rng = np.random.default_rng(args.seed)
            images = [synthetic_logo(rng, args.image_size) for _ in range(args.synthetic)]
            names = [f"synthetic_{i:05d}" for i in range(len(images))]
        else:
            raise DataError("--images DIR or --synthetic N is required (or --smoke)")
        train_i, val_i, test_i = split_images(len(images), args.seed)
        labels = make_labels(names, images, args.per_image, args.seed, data_dir, run.log)
        backbone = Backbone(args.backbone, args.seed).to(device)
        feats, feat_rate = cached_features(
            names,
            images,
            args.backbone,
            args.feature_size,
            args.seed,
            data_dir,
            lambda: extract(backbone, images, args.feature_size, 32, device, amp.dtype),
            run.log,
        )
    except (DataError, BackboneError) as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE

    x_all = np.concatenate([feats[labels.image_index], normalize_params(labels.params)], axis=1)
    sets = {}
    for name, idx in (("train", train_i), ("val", val_i), ("test", test_i)):
        mask = np.isin(labels.image_index, idx)
        sets[name] = (
            torch.from_numpy(x_all[mask]).float().to(device),
            torch.from_numpy(labels.ssim[mask]).float().to(device),
        )
    x_tr, y_tr = sets["train"]
    model = QualityPredictor(dropout=args.dropout).to(device)
    model.set_input_stats(x_tr)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(args.epochs, 1), eta_min=args.lr * 0.01
    )
    gen = torch.Generator().manual_seed(args.seed)
    records: list[dict[str, Any]] = []
    es = {"best_pearson": -2.0, "best_epoch": 0, "bad_epochs": 0, "stopped_early": False}
    start_epoch, resumed_from = 0, None
    best_state: dict[str, Any] | None = None  # the model at the best val Pearson (checkpointed)

    if resume_path:
        try:
            state = ck.load_checkpoint(Path(resume_path))
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                amp.scaler.load_state_dict(state["scaler"])
            ck.set_rng_state(state["rng"])
            gen.set_state(state["generator"])
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            run.log(f"error: cannot resume from {resume_path}: {reason}", err=True)
            return EXIT_USAGE
        records, es = list(state["records"]), dict(state["early_stopping"])
        best_state = state.get("best_model")
        start_epoch = resumed_from = state["epoch"]
        run.log(f"resumed from epoch {start_epoch} ({resume_path})")
        # metrics.jsonl := the checkpoint's epochs (drops lines past it, restores them elsewhere)
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
                "generator": gen.get_state(),
                "records": records,
                "early_stopping": es,
                "best_model": best_state,
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "time": time.time(),
            }
        )

    params = count_parameters(model)
    run.log(
        f"svg_quality: {len(images)} images, {len(labels.ssim)} samples (train {len(y_tr)}, "
        f"val {len(sets['val'][1])}, test {len(sets['test'][1])}), {params:,} params, device "
        f"{device}, amp {amp.name}, epochs {start_epoch + 1}..{args.epochs}"
    )
    last = (start_epoch, snapshot(start_epoch))
    train_seconds, samples = 0.0, 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch + 1, args.epochs + 1):
        if Stop.requested() or es["stopped_early"]:
            break
        t0 = time.monotonic()
        lr = opt.param_groups[0]["lr"]
        res = train_epoch(
            model, opt, amp, x_tr, y_tr, args.batch_size, gen, args.clip, Stop.requested
        )
        if res is None:
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.monotonic() - t0
        train_seconds, samples = train_seconds + seconds, samples + res[1]
        sched.step()
        val = evaluate(model, amp, *sets["val"])
        if val["pearson"] > es["best_pearson"] + 1e-4:
            es.update(best_pearson=val["pearson"], best_epoch=epoch, bad_epochs=0)
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            ck.atomic_write_bytes(
                run.out / "best.pth",
                ck.torch_bytes({"epoch": epoch, "val": val, "model": best_state}),
            )
        else:
            es["bad_epochs"] += 1
            es["stopped_early"] = es["bad_epochs"] >= args.patience
        record = {
            "epoch": epoch,
            "loss": round(res[0], 6),
            "lr": lr,
            "seconds": round(seconds, 4),
            "samples_per_s": round(res[1] / seconds, 1) if seconds > 0 else None,
            **{f"val_{k}": round(v, 6) for k, v in val.items()},
            "best_val_pearson": round(es["best_pearson"], 6),
            "time": round(time.time(), 3),
        }
        ck.append_jsonl(run.out / "metrics.jsonl", record)
        records.append(record)
        last = (epoch, snapshot(epoch))
        ck.save_checkpoint(run.ckpt, *last)
        run.log(
            f"epoch {epoch}/{args.epochs} loss={res[0]:.5f} val_mse={val['mse']:.5f} "
            f"val_pearson={val['pearson']:.4f} spearman={val['spearman']:.4f} {seconds:.2f}s"
        )
        if es["stopped_early"]:
            run.log(
                f"early stop: no better val Pearson for {args.patience} epochs "
                f"(best {es['best_pearson']:.4f} at epoch {es['best_epoch']})"
            )
        while (
            args.epoch_seconds
            and time.monotonic() < t0 + args.epoch_seconds
            and not Stop.requested()
        ):
            time.sleep(0.05)

    summary: dict[str, Any] = {
        "status": "completed",
        "epochs_done": last[0],
        "epochs_requested": args.epochs,
        "stopped_early": es["stopped_early"],
        "best_epoch": es["best_epoch"],
        "best_val_pearson": es["best_pearson"] if es["best_epoch"] else None,
        "images": len(images),
        "samples": int(len(labels.ssim)),
        "split_samples": {k: int(len(v[1])) for k, v in sets.items()},
        "ssim_range": [float(labels.ssim.min()), float(labels.ssim.max())],
        "label_seconds": round(labels.seconds, 3),
        "feature_images_per_s": feat_rate,
        "train_seconds": round(train_seconds, 4),
        "samples_per_s": round(samples / train_seconds, 1) if train_seconds > 0 else None,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": amp.name,
        "params": params,
        "backbone": args.backbone,
        "resumed_from": resumed_from,
        "torch": torch.__version__,
    }
    exit_code = 0
    if Stop.requested():
        ck.save_checkpoint(run.ckpt, *last)
        sig = Stop.signum or signal.SIGTERM
        run.log(
            f"checkpoint saved on {'SIGINT' if sig == signal.SIGINT else 'SIGTERM'} "
            f"at epoch {last[0]}"
        )
        summary["status"], exit_code = "interrupted", 128 + int(sig)
    elif best_state is not None:
        model.load_state_dict(best_state)
        exit_code = finish(run, args, model, sets, amp, device, backbone, images, test_i, summary)
    summary["peak_gpu_memory_mb"] = (
        round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda"
        else None
    )
    summary["total_seconds"] = round(time.monotonic() - t_run, 3)
    ck.atomic_write_json(run.out / "summary.json", summary)
    return exit_code


def finish(
    run: Run,
    args: argparse.Namespace,
    model: QualityPredictor,
    sets: dict[str, Any],
    amp: Amp,
    device: torch.device,
    backbone: Backbone,
    images: list[Any],
    test_i: np.ndarray,
    summary: dict[str, Any],
) -> int:
    """Best model (loaded) -> test metrics, checked exports, latency, AMP vs fp32 if asked."""
    # best.pth again: a run resumed in a fresh output dir has it only in its checkpoint
    ck.atomic_write_bytes(
        run.out / "best.pth",
        ck.torch_bytes({"epoch": summary["best_epoch"], "model": model.state_dict()}),
    )
    summary["test"] = evaluate(model, amp, *sets["test"])
    x_test = sets["test"][0]
    exports = export_and_check(model, x_test[:256], run.out / "exports")
    image = to_tensor([images[i] for i in test_i[:1]], args.feature_size)
    bench = latency(model, exports, x_test, device, backbone, image, args.latency_iters)
    loaded = exports.pop("_loaded")
    del loaded
    if args.compare_amp:
        compare = "fp16" if device.type == "cuda" else "bf16"
        bench["amp_vs_fp32_train_samples_per_s"] = throughput_compare(
            model, *sets["train"], args.batch_size, device, compare, steps=20
        )
    summary["exports"], summary["latency"] = exports, bench
    ck.atomic_write_json(run.out / "inference_benchmark.json", bench)
    run.log(
        f"test: pearson={summary['test']['pearson']:.4f} mse={summary['test']['mse']:.5f}; "
        f"exports torchscript diff {exports['torchscript']['max_abs_diff']:.2e}, onnx diff "
        f"{exports['onnx']['max_abs_diff']:.2e}; mlp p50 {bench['mlp_eager']['p50_ms']} ms, "
        f"pipeline p50 {bench.get('pipeline_eager', {}).get('p50_ms')} ms"
    )
    if not exports["ok"]:
        run.log("error: an export differs from the eager model by more than 1e-4", err=True)
        summary["status"] = "failed"
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
