"""Atomic files and checkpoints: what lets a run stop on one machine and continue on another.

Every file is written to a hidden temporary beside its target, fsynced, then os.replace()d over
it, and the folder is fsynced: a reader (the launcher's sync, a resumed run) sees the old file or
the whole new one, never half of it. Checkpoints keep the newest KEEP of ckpt-epoch-NNNN.pt.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "svg-quality-ckpt/1"
KEEP = 3
CKPT_RE = re.compile(r"^ckpt-epoch-(\d+)\.pt$")
REQUIRED = ("format", "epoch", "model", "optimizer", "scheduler", "rng", "config", "records")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One line per call, flushed and fsynced: a sync mid-run sees whole lines only."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt-epoch-{epoch:04d}.pt"


def save_checkpoint(directory: Path, epoch: int, data: bytes) -> Path:
    """Write a serialized state atomically as the checkpoint of `epoch`, keep the newest KEEP."""
    path = checkpoint_path(directory, epoch)
    atomic_write_bytes(path, data)
    found = sorted(
        ((int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))),
        reverse=True,
    )
    for _, old in found[KEEP:]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


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
