"""Files a reader (the launcher's pull, a rerun) sees whole or not at all, on launchkit.

manifest.jsonl is append-only, one fsynced line per finished video: a run killed at any moment
leaves whole lines, and a video is only listed after its .npz is in place.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from launchkit import append_jsonl, atomic_write_bytes, atomic_write_json, read_jsonl

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_json", "read_jsonl"]


def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
