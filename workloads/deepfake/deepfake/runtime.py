"""Device and mixed precision choices shared by training, evaluation and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .files import UsageError


def pick_device(want: str) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device")
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)


@dataclass
class Amp:
    """Mixed precision, on CUDA only: bf16 where supported, else fp16 with a GradScaler."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler

    @classmethod
    def for_device(cls, device: torch.device, want: str) -> Amp:
        on = device.type == "cuda" and want != "off"
        bf16 = on and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float16
        # bf16 has fp32's range: no loss scaling needed; fp16 (T4, V100) needs it
        return cls(on, dtype, torch.amp.GradScaler("cuda", enabled=on and not bf16))

    @classmethod
    def off(cls) -> Amp:
        return cls(False, torch.float32, torch.amp.GradScaler("cuda", enabled=False))

    @property
    def name(self) -> str:
        return ("bf16" if self.dtype == torch.bfloat16 else "fp16") if self.enabled else "off"


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
