"""On a terminal the phase spinner (stderr) and the job's lines (stdout) share one screen: each
job line must stand on a line of its own, never after the spinner's text."""

from __future__ import annotations

import re
import sys
import textwrap

from tests.terminal import in_terminal

SCRIPT = textwrap.dedent(
    """
    import time
    from launcher.render import ConsoleReporter
    from launcher.state import RunStatus
    from launcher.targets.base import LogLine

    r = ConsoleReporter()
    r.phase(RunStatus.RUNNING, RunStatus.STARTING, 1.0)
    for i in range(3):
        time.sleep(0.3)  # the spinner draws in between
        r.log(LogLine(stream="out", text=f"epoch {i}/3", at="t"))
    r.phase(RunStatus.SUCCEEDED, RunStatus.RUNNING, 1.0)
    """
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _visible(line: str) -> str:
    """What a terminal shows of one line: the text after the last carriage return or
    erase-line, without escape codes."""
    line = line.rstrip("\r")  # the terminal's own CR of CRLF
    last = max(line.rfind("\r"), line.rfind("\x1b[2K"))
    tail = line[last:] if last >= 0 else line
    return _ANSI.sub("", tail.replace("\x1b[2K", "")).strip("\r")


def test_job_lines_are_not_written_after_the_spinner() -> None:
    code, screen = in_terminal([sys.executable, "-c", SCRIPT])
    assert code == 0, screen
    lines = [_visible(line) for line in screen.split("\n") if "epoch" in line]
    assert lines == ["epoch 0/3", "epoch 1/3", "epoch 2/3"], [repr(x) for x in lines]
