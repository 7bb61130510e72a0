"""What a pre-emption move must not lose: log lines and metrics written after the last pull.

A pre-empted instance is gone (or stopped) before we can pull again. Checkpoints are safe (they
are atomic files, pulled when whole), but the two append-only files are not:

- logs/job.log: every line was already read once, live, by `read_logs`. `LogTail` keeps the raw
  bytes streamed since the last pull, and `keep_attempt_log` appends the part the pulled copy
  lacks before that copy is kept as logs/job.<instance>.log.
- outputs/metrics.jsonl: the agent copies it to logs/checkpoint-metrics/<checkpoint>.jsonl each
  time a new checkpoint appears. `restore_metrics` puts the copy that belongs to the newest
  pulled checkpoint back in place, so the resumed run continues exactly after the lines that
  checkpoint had seen: none missing, none written twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from launcher import agent as agent_mod
from launcher.sync import atomic_write_bytes, is_in_progress
from launcher.targets.vast.workspace import VastHandle

MAX_TAIL = 16 << 20  # bytes of streamed log kept in memory per run (lines past it are pulled)


class LogTail:
    """The raw job.log bytes streamed from one instance since the last pull."""

    def __init__(self) -> None:
        self.start: int = 0  # offset in the instance's job.log of buf[0]
        self.buf: bytearray = bytearray()

    def add(self, offset: int, data: bytes) -> None:
        if offset != self.start + len(self.buf):  # not contiguous: start again from here
            self.start = offset
            self.buf = bytearray()
        self.buf += data
        if len(self.buf) > MAX_TAIL:
            cut = len(self.buf) - MAX_TAIL
            del self.buf[:cut]
            self.start += cut

    def pulled(self, size: int) -> None:
        """The local copy now holds the first `size` bytes: drop what it has."""
        cut = min(max(0, size - self.start), len(self.buf))
        del self.buf[:cut]
        self.start += cut

    def after(self, size: int) -> bytes:
        """The streamed bytes past the first `size` (empty when there is a gap before them)."""
        if not self.start <= size <= self.start + len(self.buf):
            return b""
        return bytes(self.buf[size - self.start :])


def keep_attempt_log(dest: Path, instance_id: int, tail: LogTail | None) -> Path | None:
    """Complete the pulled job.log with the streamed tail and keep it as job.<instance>.log."""
    log = dest / agent_mod.LOG_FILE
    kept = log.with_name(f"job.{instance_id}.log")
    have = log.read_bytes() if log.is_file() else b""
    more = tail.after(len(have)) if tail is not None else b""
    if not have and not more:
        return None
    atomic_write_bytes(kept, have + more)
    log.unlink(missing_ok=True)
    return kept


def restore_metrics(dest: Path) -> tuple[str | None, list[str]]:
    """Put back metrics.jsonl as it was at the newest pulled checkpoint that has a snapshot.

    Returns that checkpoint's name (None when no snapshot was pulled: the job writes no metrics,
    and the pulled copy stays as it is) and the newer checkpoints to leave out of the resume:
    pulled without their snapshot (a pull cut short), resuming from them would lose the metrics
    lines in between. They stay here; the resumed run writes them again.
    """
    folder = dest / agent_mod.CHECKPOINTS
    names: list[tuple[int, str]] = []
    for path in folder.iterdir() if folder.is_dir() else ():
        if not path.name.startswith(".") and not is_in_progress(path.name):
            names.append((path.stat().st_mtime_ns, path.name))
    snaps = dest / agent_mod.METRICS_SNAPSHOTS
    order = [name for _mtime, name in sorted(names)]  # as the agent picks: mtime, then name
    have = [n for n in order if (snaps / f"{n}.jsonl").is_file()]
    if not have:
        return None, []
    best = have[-1]
    target = dest / agent_mod.OUTPUTS / agent_mod.METRICS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore.tmp")
    shutil.copyfile(snaps / f"{best}.jsonl", tmp)
    tmp.replace(target)
    return best, order[order.index(best) + 1 :]


def next_attempt(
    h: VastHandle,
    dest: Path | None,
    tail: LogTail | None,
    cursor: int,
    notify: Callable[[str], None],
) -> VastHandle:
    """The handle to rent the next instance with, after a pre-emption: resumed from `dest`
    (where this process pulled to; None = never pulled, start over), its log continuing at
    `cursor`, the old instance's log kept and metrics restored there first."""
    resume: str | None = None
    skip: list[str] = []
    if dest is not None and dest.is_dir():
        resume = str(dest)
        keep_attempt_log(dest, h.instance_id, tail)
        ckpt, skip = restore_metrics(dest)
        if ckpt:
            notify(f"resuming from checkpoint {ckpt}, with the metrics it had seen")
    return h.model_copy(
        update={
            "resume_from": resume,
            "resume_skip": skip,
            "preemptions": h.preemptions + 1,
            "log_base": cursor,
            "agent": dict(h.agent, attempt=h.preemptions + 2),
        }
    )
