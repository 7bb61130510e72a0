"""Byte progress of long transfers (bundle and input uploads, output and checkpoint pulls).

A transfer reports to a `Meter`: `start` with what it will move, `advance` per chunk, `finish`.
Who watches decides how it looks: the CLI's reporter draws a rich bar with rate and ETA on a
terminal (launcher/render.py); anywhere else `PlainMeter` says a quiet line now and then through
the run's notes. Both stay silent for transfers that end within a moment: a sync tick moving a
few log lines must not flash a bar or print a line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO, Protocol

PLAIN_EVERY_S = 10.0  # a plain line at most this often, the first after this long


class Meter(Protocol):
    def start(self, total_bytes: int, files: int) -> None:
        """What will move; `total_bytes` 0 when not known in advance."""
        ...

    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...


MeterFactory = Callable[[str], Meter]  # what is moving ("pull outputs") -> its meter


class NullMeter:
    def start(self, total_bytes: int, files: int) -> None:
        return None

    def advance(self, nbytes: int) -> None:
        return None

    def finish(self) -> None:
        return None


def human_bytes(n: float) -> str:
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def summary(what: str, nbytes: int, seconds: float) -> str:
    """The line a finished transfer leaves: "pull outputs: 520.0 MB in 10.8 s (48.1 MB/s)"."""
    rate = human_bytes(nbytes / max(seconds, 1e-9))
    return f"{what}: {human_bytes(nbytes)} in {seconds:.1f} s ({rate}/s)"


class PlainMeter:
    """Lines like "pull outputs: 41% of 520.0 MB, 48.2 MB/s, about 6 s left" every
    `every` seconds, and a closing line when at least one was said."""

    def __init__(
        self, what: str, say: Callable[[str], None], *, every: float = PLAIN_EVERY_S
    ) -> None:
        self.what, self.say, self.every = what, say, every
        self.total = self.done = self.files = 0
        self.t0 = self.last = 0.0
        self.spoke = False

    def start(self, total_bytes: int, files: int) -> None:
        self.total, self.files, self.done = total_bytes, files, 0
        self.t0 = self.last = time.monotonic()
        self.spoke = False

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        if not self.total:  # a size not known in advance
            self.say(
                f"{self.what}: {human_bytes(self.done)} so far ({self.files} file(s)), "
                f"{human_bytes(rate)}/s"
            )
            self.spoke = True
            return
        pct = 100.0 * self.done / self.total
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        self.say(
            f"{self.what}: {pct:.0f}% of {human_bytes(self.total)} ({self.files} file(s)), "
            f"{human_bytes(rate)}/s, about {left:.0f} s left"
        )
        self.spoke = True

    def finish(self) -> None:
        if self.spoke:
            self.say(summary(self.what, self.done, time.monotonic() - self.t0))


class CountingReader:
    """A binary file whose reads are told to `advance`: what an uploader (tarfile, requests)
    streams through it is counted as it goes."""

    def __init__(self, f: BinaryIO, advance: Callable[[int], None]) -> None:
        self.f, self.advance = f, advance

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.advance(len(data))
        return data
