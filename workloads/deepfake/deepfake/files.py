"""The run's folders, log and stop flag: the launch contract's plumbing, on launchkit.

Every file is written whole or not at all (launchkit: temporary, fsync, rename): a reader (the
launcher's pull, a resumed run) sees the old file or the whole new one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import launchkit as lk
from launchkit import append_jsonl, atomic_write_bytes, atomic_write_json

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_json"]  # from launchkit

EXIT_USAGE = 2


# The run's stop flag: armed by each command (SIGTERM/SIGINT set it), polled between batches and
# videos. launchkit's, as every workload's.
STOP = lk.StopFlag()


class UsageError(Exception):
    """Bad input (missing data, unusable checkpoint...): one line on stderr, exit 2."""


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_bytes(
        path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    )


def output_dir(given: Path | None) -> Path:
    return given or lk.output_dir()


def checkpoint_dir() -> Path:
    return lk.checkpoint_dir()


class Run:
    """Output folders of one run; stdout/stderr and a log file get every line."""

    def __init__(self, out_dir: Path, ckpt_dir: Path, log_name: str) -> None:
        self.out, self.ckpt = out_dir, ckpt_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(out_dir / log_name, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, msg: str, err: bool = False) -> None:
        print(msg, file=sys.stderr if err else sys.stdout, flush=True)
        self._log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
        self._log.flush()


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (for summary.json)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in ("torch", "diffusers", "transformers", "opencv-python-headless", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
