"""What a pre-emption move keeps (moves.py), and the cost of a run's attempts: real files, no
emulator needed."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from launcher import agent as agent_mod
from launcher.targets.vast.lifecycle import ours
from launcher.targets.vast.moves import LogTail, keep_attempt_log, restore_metrics
from launcher.targets.vast.workspace import Attempt, VastHandle


def test_log_tail_keeps_what_was_streamed_after_the_pulled_part(tmp_path: Path) -> None:
    tail = LogTail()
    tail.add(0, b"line 1\nline 2\n")
    tail.add(14, b"line 3\n")
    tail.pulled(7)  # the pulled copy holds "line 1\n"
    assert tail.after(7) == b"line 2\nline 3\n"
    assert tail.after(14) == b"line 3\n"
    assert tail.after(3) == b""  # before what is kept: a gap, never a wrong splice
    tail.add(100, b"elsewhere\n")  # not contiguous: starts again there
    assert tail.after(100) == b"elsewhere\n" and tail.after(21) == b""


def test_kept_attempt_log_is_the_pulled_log_plus_the_streamed_tail(tmp_path: Path) -> None:
    log = tmp_path / agent_mod.LOG_FILE
    log.parent.mkdir(parents=True)
    log.write_bytes(b"a\nb\n")
    tail = LogTail()
    tail.add(0, b"a\nb\nc\nd\n")
    kept = keep_attempt_log(tmp_path, 31000007, tail)
    assert kept == log.with_name("job.31000007.log")
    assert kept.read_bytes() == b"a\nb\nc\nd\n" and not log.exists()
    assert keep_attempt_log(tmp_path, 31000008, None) is None  # nothing pulled, nothing streamed


def test_restore_metrics_takes_the_snapshot_of_the_newest_pulled_checkpoint(
    tmp_path: Path,
) -> None:
    ckpts, snaps = tmp_path / agent_mod.CHECKPOINTS, tmp_path / agent_mod.METRICS_SNAPSHOTS
    ckpts.mkdir()
    snaps.mkdir(parents=True)
    for epoch in (3, 4, 5):
        path = ckpts / f"ckpt-{epoch}"
        path.write_text(str(epoch))
        os.utime(path, (epoch, epoch))
        if epoch < 5:  # checkpoint 5 came in a pull cut short, before its snapshot
            lines = "".join(f'{{"epoch": {e}}}\n' for e in range(1, epoch + 1))
            (snaps / f"ckpt-{epoch}.jsonl").write_text(lines)
    metrics = tmp_path / agent_mod.OUTPUTS / agent_mod.METRICS_FILE
    metrics.parent.mkdir()
    # pulled while epoch 6 was already logged: resuming from 5 would log 6 twice
    metrics.write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, 7)))
    assert restore_metrics(tmp_path) == ("ckpt-4", ["ckpt-5"])
    assert metrics.read_text().splitlines() == [f'{{"epoch": {e}}}' for e in range(1, 5)]
    assert (ckpts / "ckpt-5").is_file()  # kept here, only left out of the resume
    for snap in snaps.iterdir():
        snap.unlink()
    assert restore_metrics(tmp_path) == (None, [])  # no snapshots: the pulled copy stays


def test_cost_is_summed_over_attempts() -> None:
    h = VastHandle(
        instance_id=2,
        offer_id=9,
        label="launch-r",
        dph_total=0.5,
        bundle_path="b",
        bundle_digest="d",
        agent={},
        attempts=[
            Attempt(instance_id=1, dph_total=0.36, start=1000.0, end=1000.0 + 3600),  # $0.36
            Attempt(instance_id=2, dph_total=0.5, start=5000.0),  # held 2 h at `now`
        ],
    )
    assert h.spent(now=5000.0 + 7200) == Decimal("1.36")
    assert h.attempts[0].cost(now=99999.0) == Decimal("0.36")  # ended: no longer counting


def test_only_our_label_scheme_names_a_run() -> None:
    assert ours("launch-hello-1a2b3c") == "hello-1a2b3c"
    for label in ("launch-", "my-launch-x", "Launch-x", "", None, 42):
        assert ours(label) is None
