"""What every workload test shares: the environment the agent gives a job (`job_env`), and the
stop-and-resume step: wait until the run has written N lines (epochs to metrics.jsonl, clips to
generation.jsonl), send SIGTERM, and time the exit."""

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


def job_env(tmp: Path, resume: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment the agent gives a job, for running a workload directly: this process's
    environment without any LAUNCH_*, the run's folders under `tmp`, launchkit importable."""
    import os

    from tests.conftest import kit_path

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
    env["PYTHONPATH"] = kit_path()
    env["LAUNCH_OUTPUT_DIR"] = str(tmp / "outputs")
    env["LAUNCH_CHECKPOINT_DIR"] = str(tmp / "checkpoints")
    if resume is not None:
        env["LAUNCH_RESUME_FROM"] = str(resume)
    env.update(extra)
    return env
