"""launchkit: the launch job contract in one stdlib-only file, for the people who write jobs.

Every bundle carries it beside the agent, and the agent puts that folder on the job's PYTHONPATH,
so `import launchkit` works in docker, on Vast, in a Kaggle kernel and in Colab alike (Python 3.8
and up, nothing to install). Outside launch, point PYTHONPATH at a copy of this file.

The contract, and the helper for each part:

    import launchkit as lk

    stop = lk.StopFlag.install()        # SIGTERM/SIGINT set a flag; check stop.requested
    start = lk.resume_from()            # the newest checkpoint the agent found, or None
    for epoch in ...:
        ...                             # train; leave the loop when stop.requested
        lk.save_checkpoint(lk.checkpoint_dir(), f"ckpt-epoch-{epoch:04d}.pt", data, keep=3)
        lk.append_jsonl(lk.output_dir() / "metrics.jsonl", {"epoch": epoch, "loss": loss})
    lk.atomic_write_json(lk.output_dir() / "summary.json", {...})
    sys.exit(stop.exit_code if stop.requested else 0)

- Checkpoints go to $LAUNCH_CHECKPOINT_DIR, each written whole or not at all (temp file, fsync,
  rename): the launcher pulls them while the job runs, and a run that moves to another machine
  resumes from the newest one ($LAUNCH_RESUME_FROM).
- metrics.jsonl gets one whole, fsynced line per epoch: a pull never sees half a line, and the
  agent copies it at each checkpoint so a resumed run writes every epoch's line exactly once.
- On SIGTERM the job saves a checkpoint within limits.grace_seconds and exits: that is how a
  cancel, a cost cap, a time limit or a platform's session cap end without losing work.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any, cast

__all__ = [
    "StopFlag",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "checkpoint_dir",
    "input_dir",
    "newest_checkpoint",
    "output_dir",
    "read_jsonl",
    "resume_from",
    "save_checkpoint",
]

_PARTIAL_SUFFIXES = (".tmp", ".partial", ".part", "~")  # as the agent and the launcher skip them
_NUMBERED = re.compile(r"(\d+)")


# ---- where things go ------------------------------------------------------------------------


def _folder(variable: str, default: str) -> Path:
    path = Path(os.environ.get(variable) or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir() -> Path:
    """$LAUNCH_OUTPUT_DIR (./outputs outside launch), made if missing: results, metrics.jsonl."""
    return _folder("LAUNCH_OUTPUT_DIR", "outputs")


def checkpoint_dir() -> Path:
    """$LAUNCH_CHECKPOINT_DIR (./checkpoints outside launch), made if missing."""
    return _folder("LAUNCH_CHECKPOINT_DIR", "checkpoints")


def input_dir() -> Path:
    """$LAUNCH_INPUT_DIR: the job's inputs, each under the name its spec gave (`as:`)."""
    return Path(os.environ.get("LAUNCH_INPUT_DIR") or "inputs")


def resume_from() -> Path | None:
    """The checkpoint to continue from: $LAUNCH_RESUME_FROM, which the agent sets to the newest
    complete checkpoint when one exists (after a cancel, a pre-emption, a session cap)."""
    value = os.environ.get("LAUNCH_RESUME_FROM")
    return Path(value) if value else None


# ---- files a reader never sees half of ------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a hidden temporary beside `path`, fsync, rename over it: a reader (the
    launcher's pull, a resumed run) sees the old file or the whole new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(str(tmp), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(str(tmp), str(path))
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One whole JSON line per call, flushed and fsynced: a pull mid-run sees whole lines."""
    with open(str(path), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole object lines of a JSONL file; a torn last line (a kill mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(cast("dict[str, Any]", row))
    return rows


# ---- checkpoints ----------------------------------------------------------------------------


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint among the direct children of `directory`, chosen the way
    the agent chooses $LAUNCH_RESUME_FROM: hidden and in-progress names skipped, greatest mtime,
    ties to the greatest name."""
    best: tuple[int, str] | None = None
    try:
        names = os.listdir(str(directory))
    except OSError:
        return None
    for name in names:
        if name.startswith(".") or name.endswith(_PARTIAL_SUFFIXES):
            continue
        try:
            key = (os.stat(os.path.join(str(directory), name)).st_mtime_ns, name)
        except OSError:
            continue
        if best is None or key > best:
            best = key
    return Path(directory) / best[1] if best is not None else None


def save_checkpoint(
    directory: Path, name: str, data: bytes, keep: int = 3, pattern: re.Pattern[str] | None = None
) -> Path:
    """Write `data` atomically as `directory/name`, then keep only the newest `keep` checkpoints
    that match `pattern` (default: names shaped like this one with another number, e.g.
    ckpt-epoch-0007.pt), newest by that number."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    atomic_write_bytes(path, data)
    if pattern is None:
        parts = _NUMBERED.split(name)
        if len(parts) < 3:  # no number in the name: nothing to rotate
            return path
        pattern = re.compile(
            "^"
            + "".join(re.escape(p) if i % 2 == 0 else r"(\d+)" for i, p in enumerate(parts))
            + "$"
        )
    found: list[tuple[tuple[int, ...], Path]] = []
    for other in directory.iterdir():
        m = pattern.match(other.name)
        if m:
            found.append((tuple(int(g) for g in m.groups() if g and g.isdigit()), other))
    found.sort(reverse=True)
    for _, old in found[keep:]:
        if old != path:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return path


# ---- stopping in time -----------------------------------------------------------------------


class StopFlag:
    """Set by SIGTERM or SIGINT; the job polls `requested` between steps (setting a flag is the
    one thing safe to do inside a signal handler) and saves a checkpoint before it exits."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signum is None:  # the first signal is the one to report
            self.signum = signum

    @classmethod
    def install(cls) -> StopFlag:
        """A new flag that SIGTERM and SIGINT set from now on."""
        return cls().arm()

    def arm(self) -> StopFlag:
        """Let SIGTERM and SIGINT set this flag (for a flag made at import time)."""
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)
        return self

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process the signal ended: 128 + its number (143, 130)."""
        return 128 + (self.signum or signal.SIGTERM)
