"""Run a command as a user at a terminal: stdout and stderr on a pseudo-terminal (rich draws
colours, tables and spinners only there)."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path


def in_terminal(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `args` with stdout and stderr on a pseudo-terminal; its exit code and screen."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode("utf-8", "replace")
