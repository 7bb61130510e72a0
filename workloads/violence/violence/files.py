"""Atomic files and checkpoints: what lets a run stop on one machine and continue on another.

Every file is written to a hidden temporary beside its target, fsynced, then os.replace()d over
it: a reader (the launcher's sync, a resumed run) sees the old file or the whole new one. A
checkpoint is one .npz holding the model's and the optimizer's variables plus a JSON header
(epoch, metrics so far, best score, RNG state, config); np.load(allow_pickle=False) reads it, so
a checkpoint pulled from a rented machine cannot run code when loaded.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "violence-ckpt/1"
KEEP = 3
CKPT_RE = re.compile(r"^ckpt-epoch-(\d+)\.npz$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One whole line per call, fsynced: a sync mid-run sees whole lines only."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    path = directory / f"ckpt-epoch-{epoch:04d}.npz"
    atomic_write_bytes(path, data)
    found = sorted(
        ((int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))),
        reverse=True,
    )
    for _, old in found[KEEP:]:
        if old != path:
            old.unlink(missing_ok=True)
    return path
