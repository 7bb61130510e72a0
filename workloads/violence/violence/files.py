"""Checkpoints: what lets a run stop on one machine and continue on another.

Files are written with launchkit (shipped in every bundle): whole or not at all, so a reader
(the launcher's pull, a resumed run) sees the old file or the whole new one. A checkpoint is one .npz holding the model's and the optimizer's variables plus a JSON header
(epoch, metrics so far, best score, RNG state, config); np.load(allow_pickle=False) reads it, so
a checkpoint pulled from a rented machine cannot run code when loaded.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import launchkit as lk
import numpy as np
from launchkit import append_jsonl, atomic_write_bytes, atomic_write_json

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_json"]  # from launchkit

FORMAT = "violence-ckpt/1"
KEEP = 3
CKPT_RE = re.compile(r"^ckpt-epoch-(\d+)\.npz$")


def pack_state(meta: dict[str, Any], model: list[np.ndarray], opt: list[np.ndarray]) -> bytes:
    """Serialize a checkpoint to bytes (kept in memory: a SIGTERM mid-epoch saves these)."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps({**meta, "format": FORMAT}).encode(), dtype=np.uint8)
    }
    arrays.update({f"model_{i:04d}": a for i, a in enumerate(model)})
    arrays.update({f"opt_{i:04d}": a for i, a in enumerate(opt)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_state(path: Path) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """(meta, model arrays, optimizer arrays); ValueError/OSError with a reason if unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            model = [z[k] for k in sorted(k for k in z.files if k.startswith("model_"))]
            opt = [z[k] for k in sorted(k for k in z.files if k.startswith("opt_"))]
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/numpy raise many types for a damaged file
        raise ValueError(f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not a violence checkpoint (expected format {FORMAT!r})")
    if not isinstance(meta.get("epoch"), int) or meta["epoch"] < 0:
        raise ValueError(f"bad epoch {meta.get('epoch')!r}")
    return meta, model, opt


def save_checkpoint(directory: Path, epoch: int, data: bytes) -> Path:
    """Write `data` atomically as the checkpoint of `epoch`; keep the newest KEEP of them."""
    return lk.save_checkpoint(directory, f"ckpt-epoch-{epoch:04d}.npz", data, KEEP, CKPT_RE)
