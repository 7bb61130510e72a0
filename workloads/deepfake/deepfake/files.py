"""Atomic files, the run's log, and the stop flag: the launch contract's plumbing.

Every file is written to a hidden temporary beside its target, fsynced, then os.replace()d over
it: a reader (the launcher's sync, a resumed run) sees the old file or the whole new one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class Stop:
    """Set by SIGTERM/SIGINT, polled between batches and videos (a flag is signal-safe)."""

    signum: int | None = None

    @classmethod
    def handler(cls, signum: int, _frame: Any) -> None:
        if cls.signum is None:
            cls.signum = signum

    @classmethod
    def requested(cls) -> bool:
        return cls.signum is not None

    @classmethod
    def install(cls) -> None:
        import signal

        signal.signal(signal.SIGTERM, cls.handler)
        signal.signal(signal.SIGINT, cls.handler)


class UsageError(Exception):
    """Bad input (missing data, unusable checkpoint...): one line on stderr, exit 2."""


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


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_bytes(
        path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    )


def output_dir(given: Path | None) -> Path:
    return given or Path(os.environ.get("LAUNCH_OUTPUT_DIR") or "outputs")


def checkpoint_dir() -> Path:
    return Path(os.environ.get("LAUNCH_CHECKPOINT_DIR") or "checkpoints")


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
