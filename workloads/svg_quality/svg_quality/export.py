"""Exports (TorchScript, ONNX) checked against the eager model, and latency/throughput figures.

Every export is reloaded and run on real held-out inputs; the largest absolute difference from
the eager model is recorded, and an export that differs by more than TOLERANCE fails the run
(exit 1): a model that cannot be deployed as trained is not a result.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .loop import Amp, train_epoch

TOLERANCE = 1e-4


def _percentiles(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


def time_calls(fn: Callable[[], Any], iters: int, sync: Callable[[], None]) -> dict[str, float]:
    for _ in range(max(2, iters // 10)):  # warm-up: allocator, caches, lazy init
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def export_and_check(model: nn.Module, sample: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """TorchScript + ONNX files of the eval-mode CPU model, each checked against eager."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = copy.deepcopy(model).cpu().eval()
    x = sample.cpu().float()
    with torch.no_grad():
        eager = cpu(x).numpy()
    report: dict[str, Any] = {}

    ts_path = out_dir / "model.torchscript.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export; works
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(cpu, x[:2])
        traced.save(str(ts_path))
        loaded = torch.jit.load(str(ts_path))
    with torch.no_grad():
        ts_out = loaded(x).numpy()
    report["torchscript"] = {
        "path": ts_path.name,
        "bytes": ts_path.stat().st_size,
        "max_abs_diff": float(np.abs(ts_out - eager).max()),
    }

    import onnx
    import onnxruntime as ort

    onnx_path = out_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dynamo=False: the TorchScript-based exporter writes one self-contained file and needs
        # no onnxscript; the batch axis stays dynamic
        torch.onnx.export(
            cpu,
            (x[:2],),
            str(onnx_path),
            input_names=["features"],
            output_names=["ssim"],
            dynamic_axes={"features": {0: "batch"}, "ssim": {0: "batch"}},
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"features": x.numpy()})[0]
    report["onnx"] = {
        "path": onnx_path.name,
        "bytes": onnx_path.stat().st_size,
        "max_abs_diff": float(np.abs(onnx_out - eager).max()),
        "onnxruntime": ort.__version__,
    }
    report["checked_samples"] = int(x.shape[0])
    report["ok"] = all(report[k]["max_abs_diff"] <= TOLERANCE for k in ("torchscript", "onnx"))
    report["_loaded"] = (loaded, sess)
    return report


def latency(
    model: nn.Module,
    exports: dict[str, Any],
    sample: torch.Tensor,
    device: torch.device,
    backbone: nn.Module | None,
    image: torch.Tensor | None,
    iters: int,
) -> dict[str, Any]:
    """Per-sample latency (batch 1) of the MLP alone (eager on the device, TorchScript and
    ONNX Runtime on CPU) and of the whole pipeline (image -> ResNet-50 -> MLP) on the device."""
    model = model.eval()
    x1 = sample[:1].to(device)
    xc = sample[:1].cpu().float()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    none: Callable[[], None] = lambda: None  # noqa: E731
    traced, sess = exports["_loaded"]
    out: dict[str, Any] = {"device": device.type, "iters": iters, "batch": 1}
    with torch.inference_mode():
        out["mlp_eager"] = time_calls(lambda: model(x1), iters, sync)
        out["mlp_torchscript_cpu"] = time_calls(lambda: traced(xc), iters, none)
        feed = {"features": xc.numpy()}
        out["mlp_onnxruntime_cpu"] = time_calls(lambda: sess.run(None, feed), iters, none)
        if backbone is not None and image is not None:
            img = image[:1].to(device)
            params = x1[:, -8:]

            def pipeline() -> torch.Tensor:
                return model(torch.cat([backbone(img), params], dim=1))

            out["pipeline_eager"] = time_calls(pipeline, max(5, iters // 10), sync)
            out["pipeline_image_size"] = int(image.shape[-1])
    return out


def throughput_compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp_name: str,
    steps: int,
) -> dict[str, Any]:
    """Training samples/s of fp32 and of `amp_name`, on copies of the model, same data, same
    run: the mixed-precision speed-up as measured here, not as claimed."""
    n = min(x.shape[0], batch_size * steps)
    res: dict[str, Any] = {"steps": steps, "batch_size": batch_size}
    for name in ("off", amp_name):
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        amp = Amp.choose(device, name)
        g = torch.Generator().manual_seed(0)
        train_epoch(m, opt, amp, x[:n], y[:n], batch_size, g, 1.0, lambda: False)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        r = train_epoch(m, opt, amp, x[:n], y[:n], batch_size, g, 1.0, lambda: False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        res["fp32" if name == "off" else amp.name] = round((r[1] if r else 0) / seconds, 1)
    if amp_name != "off" and res.get("fp32"):
        key = next(k for k in res if k in ("fp16", "bf16"))
        res["speedup"] = round(res[key] / res["fp32"], 3)
    return res
