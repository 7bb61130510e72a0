"""Checkpoints: what lets a run stop on one machine and continue on another.

Files are written with launchkit (shipped in every bundle): whole or not at all, so a reader
(the launcher's pull, a resumed run) never sees half of one. Checkpoints keep the newest KEEP of
ckpt-epoch-NNNN.pt; loading checks them (weights only: a pulled file must not run code).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import launchkit as lk
import numpy as np
import torch
from launchkit import append_jsonl, atomic_write_bytes, atomic_write_json

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_json"]  # from launchkit

FORMAT = "svg-quality-ckpt/1"
KEEP = 3
CKPT_RE = re.compile(r"^ckpt-epoch-(\d+)\.pt$")
REQUIRED = ("format", "epoch", "model", "optimizer", "scheduler", "rng", "config", "records")


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt-epoch-{epoch:04d}.pt"


def save_checkpoint(directory: Path, epoch: int, data: bytes) -> Path:
    """Write a serialized state atomically as the checkpoint of `epoch`, keep the newest KEEP."""
    return lk.save_checkpoint(directory, checkpoint_path(directory, epoch).name, data, KEEP, CKPT_RE)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked; ValueError/OSError with a readable reason if unusable.

    weights_only=True: a checkpoint pulled from a rented machine must not run code when loaded,
    so the state holds tensors and plain Python values only (numpy RNG state as lists).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ValueError(f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not an svg_quality checkpoint (expected format {FORMAT!r})")
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
        # lists, not an ndarray: checkpoints load with weights_only=True
        "numpy": [np_state[0], np_state[1].tolist(), *[v for v in np_state[2:]]],
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
