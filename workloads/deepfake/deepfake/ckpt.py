"""Checkpoints: the training state as one torch file, written atomically, newest KEEP kept.

Loaded with weights_only=True: a checkpoint pulled from a rented machine must not run code, so
the state holds tensors and plain values only (model configs as JSON strings, numpy RNG state
as lists).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write_bytes

FORMAT = "deepfake-ckpt/1"
KEEP = 3
BEST = "ckpt-best.pt"
CKPT_RE = re.compile(r"^ckpt-epoch-(\d+)\.pt$")
REQUIRED = ("format", "epoch", "model", "spec", "config")


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save(directory: Path, epoch: int, data: bytes) -> Path:
    path = directory / f"ckpt-epoch-{epoch:04d}.pt"
    atomic_write_bytes(path, data)
    found = sorted(
        ((int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))),
        reverse=True,
    )
    for _, old in found[KEEP:]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked; ValueError/OSError with a readable reason."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ValueError(f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a deepfake checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    if not isinstance(state["epoch"], int) or state["epoch"] < 0:
        raise ValueError(f"bad epoch {state['epoch']!r}")
    return state


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
