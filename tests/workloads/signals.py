"""The step every workload's stop-and-resume test shares: wait until the run has written N
lines (epochs to metrics.jsonl, clips to generation.jsonl), send SIGTERM, and time the exit."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def sigterm_after_lines(
    proc: subprocess.Popen[str],
    lines_file: Path,
    n: int = 2,
    *,
    wait_s: float = 60,
    exit_timeout_s: float = 30,
) -> tuple[str, str, float]:
    """SIGTERM `proc` once `lines_file` has `n` lines; returns (stdout, stderr, seconds
    from the signal to the exit). Fails if the process ends or stalls first; never leaves it
    running."""
    try:
        deadline = time.monotonic() + wait_s
        while not (lines_file.exists() and len(lines_file.read_text().splitlines()) >= n):
            assert proc.poll() is None, f"the run ended before {lines_file.name} had {n} lines"
            assert time.monotonic() < deadline, f"{lines_file.name}: {n} lines not within {wait_s} s"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=exit_timeout_s)
        return stdout, stderr, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
