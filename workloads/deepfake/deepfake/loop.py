"""One training epoch and the per-epoch validation of a detector. Shuffling and augmentation
come from a generator seeded by (seed, epoch), not from state carried between epochs, so a
resumed epoch N sees exactly the batches an uninterrupted run would."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import predict, scores, to_input
from .models import Detector
from .runtime import Amp


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_epoch(
    detector: Detector,
    opt: torch.optim.Optimizer,
    amp: Amp,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    device: torch.device,
    should_stop: Callable[[], bool],
) -> tuple[float, float, int] | None:
    """(mean loss, accuracy, samples seen), or None when a stop was asked mid-epoch (the partial
    epoch is abandoned: the caller saves the last completed one)."""
    detector.train()
    g = epoch_generator(seed, epoch)
    order = torch.randperm(x_u8.shape[0], generator=g)
    flips = torch.rand(x_u8.shape[0], generator=g) < 0.5
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for start in range(0, len(order), batch_size):
        if should_stop():
            return None
        idx = order[start : start + batch_size]
        x = to_input(x_u8[idx], device)
        flip = flips[idx].to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # horizontal flip, half
        target = y[idx].to(device)
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = detector(x)
        # every member learns from its own loss; the ensemble is their mean
        loss = torch.stack([F.cross_entropy(v.float(), target) for v in logits.values()]).mean()
        opt.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(detector.parameters(), 1.0)
        amp.scaler.step(opt)
        amp.scaler.update()
        with torch.no_grad():
            pred = (Detector.fake_prob(logits) >= 0.5).long()
            correct += (pred == target).sum()
            total += loss.detach() * len(idx)
        seen += len(idx)
    return float(total) / max(seen, 1), float(correct) / max(seen, 1), seen


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def validate(
    detector: Detector, x_u8: torch.Tensor, y: np.ndarray, batch: int, device: torch.device,
    amp: Amp,
) -> dict[str, Any]:  # fmt: skip
    """val_loss (log loss of the ensemble probability), val_accuracy, val_auc, val_f1, and the
    AUC of each member of an ensemble."""
    probs = predict(detector, x_u8, batch, device, amp)
    s = scores(y, probs["ensemble"])
    out: dict[str, Any] = {
        "val_loss": round(log_loss(y, probs["ensemble"]), 6),
        "val_accuracy": round(s["accuracy"], 6),
        "val_auc": None if s["auc"] is None else round(s["auc"], 6),
        "val_f1": round(s["f1"], 6),
    }
    members = [k for k in probs if k != "ensemble"]
    if len(members) > 1:
        for name in members:
            auc = scores(y, probs[name])["auc"]
            out[f"val_auc_{name}"] = None if auc is None else round(auc, 6)
    return out


def better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Higher validation AUC wins, then lower validation loss."""
    if best is None:
        return True

    def key(r: dict[str, Any]) -> tuple[float, float]:
        auc = r.get("val_auc")
        return (
            -1.0 if auc is None else auc,
            -r["val_loss"] if math.isfinite(r["val_loss"]) else -1e9,
        )

    return key(record) > key(best)
