"""One training epoch, held-out evaluation and the sample grid: the parts of train.py that touch
tensors. Noise and shuffling come from a generator seeded by (seed, epoch), not from state carried
between epochs, so a resumed epoch N sees exactly the batches an uninterrupted run would."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import to_float
from .png import grid


@dataclass
class Amp:
    """Mixed precision: on CUDA only (bf16 where supported, else fp16 with a GradScaler)."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler

    @classmethod
    def for_device(cls, device: torch.device, want: str) -> Amp:
        on = device.type == "cuda" and want != "off"
        bf16 = on and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float16
        # bf16 has fp32's range: no loss scaling needed. fp16 (T4, V100) needs it.
        scaler = torch.amp.GradScaler("cuda", enabled=on and not bf16)
        return cls(on, dtype, scaler)

    @property
    def name(self) -> str:
        return ("bf16" if self.dtype == torch.bfloat16 else "fp16") if self.enabled else "off"


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def noisy_copy(clean: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise, drawn on the CPU so every device sees the same noise."""
    return clean + noise * torch.randn(clean.shape, generator=g).to(clean.device)


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    amp: Amp,
    images: torch.Tensor,
    *,
    batch_size: int,
    noise: float,
    seed: int,
    epoch: int,
    should_stop: Callable[[], bool],
) -> tuple[float, int] | None:
    """(mean train MSE, samples seen), or None when a stop was asked mid-epoch (the partial
    epoch is then abandoned: the caller saves the last completed one)."""
    model.train()
    g = epoch_generator(seed, epoch)
    order = torch.randperm(images.shape[0], generator=g)
    device = images.device
    total = torch.zeros((), device=device)
    seen = 0
    for start in range(0, len(order), batch_size):
        if should_stop():
            return None
        idx = order[start : start + batch_size].to(device)
        clean = to_float(images[idx])
        noisy = noisy_copy(clean, noise, g)
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            out = model(noisy)
        loss = F.mse_loss(out.float(), clean)
        opt.zero_grad(set_to_none=True)
        amp.scaler.scale(loss).backward()
        amp.scaler.unscale_(opt)
        # the graph terms (exp of distances) can spike early on; clipping keeps tau/radius sane
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        amp.scaler.step(opt)
        amp.scaler.update()
        total += loss.detach() * clean.shape[0]
        seen += clean.shape[0]
    return float(total) / max(seen, 1), seen


@dataclass
class Eval:
    loss: float  # MSE denoised vs clean
    noisy_loss: float  # MSE noisy vs clean: what "no denoising" scores
    psnr: float  # dB, mean over held-out images, output clamped to [0, 1]
    psnr_noisy: float


def _psnr(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    mse = ((x.clamp(0, 1) - clean) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate(
    model: nn.Module, amp: Amp, clean_u8: torch.Tensor, noisy: torch.Tensor, batch_size: int
) -> Eval:
    """Held-out images with fixed noise: the numbers are comparable from epoch to epoch."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    for start in range(0, clean_u8.shape[0], batch_size):
        clean = to_float(clean_u8[start : start + batch_size])
        x = noisy[start : start + batch_size]
        with torch.autocast(clean.device.type, dtype=amp.dtype, enabled=amp.enabled):
            out = model(x).float()
        sums += (
            torch.stack(
                [
                    ((out - clean) ** 2).flatten(1).mean(1).sum(),
                    ((x - clean) ** 2).flatten(1).mean(1).sum(),
                    _psnr(out, clean).sum(),
                    _psnr(x, clean).sum(),
                ]
            )
            .double()
            .cpu()
        )
    n = max(clean_u8.shape[0], 1)
    vals = [float(v) / n for v in sums]
    return Eval(*[v if math.isfinite(v) else float("nan") for v in vals])


@torch.no_grad()
def sample_grid(
    model: nn.Module, amp: Amp, clean_u8: torch.Tensor, noisy: torch.Tensor
) -> torch.Tensor:
    """Rows: clean, noisy, denoised - uint8 (3, H, W) ready for encode_png."""
    model.eval()
    clean = to_float(clean_u8)
    with torch.autocast(clean.device.type, dtype=amp.dtype, enabled=amp.enabled):
        out = model(noisy).float()
    return grid([clean, noisy.clamp(0, 1), out.clamp(0, 1)])
