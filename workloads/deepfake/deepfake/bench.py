"""Inference benchmark of a detector: latency percentiles at batch 1, throughput at a larger
batch, peak GPU memory, for fp32 and (on CUDA) mixed precision measured in the same run.

  python3 -m deepfake benchmark --checkpoint ckpt-best.pt [--batch-size 64] [--iters 50]

The figures go to benchmark.json; on a CPU only fp32 is measured (autocast on CPU is not what a
GPU deployment runs), and the amp speed-up stays null there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import files
from .files import EXIT_USAGE, Run, UsageError
from .runtime import Amp, device_name, peak_memory_mb, pick_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure(
    detector: Any, img_size: int, device: torch.device, amp: Amp, batch: int, iters: int,
    warmup: int,
) -> dict[str, Any]:  # fmt: skip
    detector.eval().to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    g = torch.Generator().manual_seed(0)
    one = torch.rand(1, 3, img_size, img_size, generator=g).to(device)
    many = torch.rand(batch, 3, img_size, img_size, generator=g).to(device)

    def call(x: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            detector(x)

    for _ in range(warmup):
        call(one)
        call(many)
    _sync(device)
    lat: list[float] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call(one)
        _sync(device)
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    rounds = max(1, iters // 4)
    for _ in range(rounds):
        call(many)
    _sync(device)
    seconds = time.perf_counter() - t0
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]).tolist()
    return {
        "precision": amp.name if amp.enabled else "fp32",
        "latency_ms": {
            "p50": round(p50, 3),
            "p90": round(p90, 3),
            "p99": round(p99, 3),
            "mean": round(float(np.mean(lat)), 3),
        },  # fmt: skip
        "batch1_samples_per_s": round(1000 / float(np.mean(lat)), 2),
        "batch": batch,
        "samples_per_s": round(rounds * batch / seconds, 2),
        "peak_gpu_memory_mb": peak_memory_mb(device),
    }


def train_speed(
    detector: Any, img_size: int, device: torch.device, batch: int, steps: int
) -> dict[str, Any]:
    """Training steps per second of a copy of `detector` on random data, fp32 and (on CUDA)
    mixed precision, measured back to back: the AMP speed-up of this model on this GPU. The
    global RNG is forked, so a run with and without this measurement trains the same."""
    import copy

    import torch.nn.functional as F

    out: dict[str, Any] = {"batch": batch, "steps": steps}
    amps = [Amp.off(), Amp.for_device(device, "auto")]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, img_size, img_size, generator=g).to(device)
        y = torch.randint(0, 2, (batch,), generator=g).to(device)
        for amp in amps if amps[1].enabled else amps[:1]:
            model = copy.deepcopy(detector).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
            t0 = 0.0
            for i in range(steps + 2):  # 2 warm-up steps (kernels, allocator)
                if i == 2:
                    _sync(device)
                    t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
                    logits = model(x)
                loss = torch.stack([F.cross_entropy(v.float(), y) for v in logits.values()]).sum()
                opt.zero_grad(set_to_none=True)
                amp.scaler.scale(loss).backward()
                amp.scaler.step(opt)
                amp.scaler.update()
            _sync(device)
            name = "fp32" if not amp.enabled else amp.name
            out[f"{name}_samples_per_s"] = round(steps * batch / (time.perf_counter() - t0), 2)
            del model, opt
    amp_key = next(
        (k for k in out if k.endswith("_samples_per_s") and k != "fp32_samples_per_s"), None
    )
    out["amp_speedup"] = round(out[amp_key] / out["fp32_samples_per_s"], 3) if amp_key else None
    return out


def benchmark(
    detector: Any, img_size: int, device: torch.device, batch: int, iters: int, warmup: int = 3
) -> dict[str, Any]:
    runs = [measure(detector, img_size, device, Amp.off(), batch, iters, warmup)]
    amp = Amp.for_device(device, "auto")
    if amp.enabled:
        runs.append(measure(detector, img_size, device, amp, batch, iters, warmup))
    speedup = None
    if len(runs) == 2:
        speedup = round(runs[1]["samples_per_s"] / runs[0]["samples_per_s"], 3)
    return {
        "device": device.type,
        "device_name": device_name(device),
        "img_size": img_size,
        "iters": iters,
        "runs": runs,
        "amp_speedup": speedup,
        "samples_per_s": max(r["samples_per_s"] for r in runs),
        "torch": torch.__version__,
    }


def main(argv: list[str]) -> int:
    from .evaluate import load_detector

    p = argparse.ArgumentParser(prog="python3 -m deepfake benchmark", description=__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--output-dir", type=Path, default=None)
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.iters < 1:
        p.error("--batch-size and --iters must be >= 1")
    run = Run(files.output_dir(args.output_dir), files.checkpoint_dir(), "benchmark.log")
    try:
        detector, state = load_detector(args.checkpoint)
        device = pick_device(args.device)
    except UsageError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE
    result = benchmark(detector, int(state["config"]["img_size"]), device, args.batch_size,
                       args.iters)  # fmt: skip
    files.atomic_write_json(run.out / "benchmark.json", result)
    for r in result["runs"]:
        run.log(f"benchmark {r['precision']}: {r['samples_per_s']} samples/s at batch "
                f"{r['batch']}, p50 {r['latency_ms']['p50']} ms at batch 1")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
