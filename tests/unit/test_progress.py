"""Byte progress: what a user sees during long transfers, on a terminal and off one."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from launcher.progress import PlainMeter, human_bytes
from launcher.render import ConsoleReporter
from launcher.sync import LocalTree, pull_tree, push_tree, tree_files


class Recorder:
    def __init__(self) -> None:
        self.total = self.files = self.seen = 0
        self.finished = False

    def start(self, total_bytes: int, files: int) -> None:
        self.total, self.files = total_bytes, files

    def advance(self, nbytes: int) -> None:
        self.seen += nbytes

    def finish(self) -> None:
        self.finished = True


def test_pull_and_push_report_every_byte_they_move(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"f{i}.bin").write_bytes(os.urandom(300_000 * (i + 1)))
    meter = Recorder()
    result = pull_tree(LocalTree(src), tmp_path / "home", meter=meter)
    assert meter.files == 5 and meter.total == meter.seen == result.bytes_copied == 4_500_000
    assert meter.finished
    quiet = Recorder()  # nothing changed: no transfer, no progress
    pull_tree(LocalTree(src), tmp_path / "home", meter=quiet)
    assert (quiet.files, quiet.finished) == (0, False)
    pushed = Recorder()
    done = push_tree(tree_files(src), LocalTree(tmp_path / "far"), meter=pushed)
    assert pushed.total == pushed.seen == done.bytes_sent == 4_500_000 and pushed.finished


def test_plain_lines_come_only_for_long_transfers() -> None:
    said: list[str] = []
    quick = PlainMeter("pull outputs", said.append, every=60)
    quick.start(10_000_000, 3)
    quick.advance(10_000_000)
    quick.finish()
    assert said == []  # a short sync tick says nothing
    slow = PlainMeter("pull outputs", said.append, every=0)
    slow.start(10_000_000, 3)
    slow.advance(4_000_000)
    slow.advance(6_000_000)
    slow.finish()
    assert said[0].startswith("pull outputs: 40% of 10.0 MB (3 file(s)), ")
    assert "B/s, about " in said[0] and said[0].endswith(" s left")
    assert said[-1].startswith("pull outputs: 10.0 MB in ")
    assert human_bytes(999) == "999 B" and human_bytes(1_500_000_000) == "1.5 GB"


def test_the_terminal_gets_a_bar_with_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher import render

    reporter = ConsoleReporter()
    out = io.StringIO()
    reporter.err = Console(file=out, force_terminal=True, width=120, highlight=False)
    monkeypatch.setattr(render._RichMeter, "SHOW_AFTER_S", 0.0)  # pyright: ignore[reportPrivateUsage]
    meter = reporter.meter("upload bundle")
    meter.start(8_000_000, 2)
    meter.advance(4_000_000)
    meter.advance(4_000_000)
    meter.finish()
    text = out.getvalue()
    assert "upload bundle (2 files)" in text  # the bar's label, drawn while it ran
    assert "upload bundle: 8.0 MB in " in text  # the line it leaves behind
    off_terminal = ConsoleReporter()
    off_terminal.err = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(off_terminal.meter("x"), PlainMeter)
