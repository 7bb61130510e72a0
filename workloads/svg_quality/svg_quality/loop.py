"""One training epoch (AMP, gradient clipping, stoppable between batches) and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Amp:
    """Mixed precision: CUDA fp16 with a GradScaler, CUDA/CPU bf16, or off."""

    name: str  # "fp16" | "bf16" | "off"
    device_type: str
    scaler: torch.amp.GradScaler

    @classmethod
    def choose(cls, device: torch.device, want: str) -> Amp:
        if want == "auto":
            want = "fp16" if device.type == "cuda" else "off"
        if want == "fp16" and device.type != "cuda":
            want = "bf16"  # CPU autocast has no fp16 matmuls worth having
        return cls(want, device.type, torch.amp.GradScaler(device.type, enabled=want == "fp16"))

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.name)

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        # ties share their mean rank
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]

    return pearson(ranks(a), ranks(b))


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    amp: Amp,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    clip: float,
    should_stop: Callable[[], bool],
) -> tuple[float, int] | None:
    """Mean MSE and samples seen; None when stopped part-way (the epoch does not count)."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    total, seen = 0.0, 0
    for i in range(0, x.shape[0], batch_size):
        if should_stop():
            return None
        idx = order[i : i + batch_size]
        if idx.numel() < 2:  # BatchNorm needs two samples
            continue
        with amp.autocast():
            pred = model(x[idx])
            loss = nn.functional.mse_loss(pred.float(), y[idx])
        opt.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        amp.scaler.step(opt)
        amp.scaler.update()
        total += float(loss.detach()) * idx.numel()
        seen += idx.numel()
    return total / max(seen, 1), seen


@torch.no_grad()
def predict(model: nn.Module, amp: Amp, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        with amp.autocast():
            out.append(model(x[i : i + batch_size]).float().cpu())
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, amp: Amp, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    pred = predict(model, amp, x)
    true = y.cpu().numpy()
    return {
        "mse": float(((pred - true) ** 2).mean()),
        "mae": float(np.abs(pred - true).mean()),
        "pearson": pearson(pred, true),
        "spearman": spearman(pred, true),
    }
