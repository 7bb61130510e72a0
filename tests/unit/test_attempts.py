"""What carries a run from one attempt to the next (launcher/attempts.py), and what an
attempt costs: real files, no platform needed."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from launcher import agent as agent_mod
from launcher.attempts import (
    StreamedLog,
    attempt_logs,
    copy_resume_sources,
    has_checkpoint,
    keep_attempt_log,
    restore_metrics,
    resume_sources,
)
from launcher.state import AttemptRecord
from launcher.targets.base import LogLine
from launcher.targets.vast.lifecycle import parse_label


def _line(i: int) -> LogLine:
    return LogLine(at=f"2026-12-02T10:00:{i:02d}.000Z", stream="out", text=f"line {i}")


def _raw(i: int) -> str:
    return f"2026-12-02T10:00:{i:02d}.000Z out line {i}\n"


def test_streamed_lines_after_the_last_pulled_one_and_never_a_wrong_splice() -> None:
    log = StreamedLog(keep=3)
    for i in range(1, 6):
        log.add(_line(i))
    assert log.after(_raw(3).rstrip("\n")) == [_raw(4).rstrip("\n"), _raw(5).rstrip("\n")]
    assert log.after(_raw(5).rstrip("\n")) == []
    assert log.after(_raw(1).rstrip("\n")) == []  # older than what is kept: a gap, not a guess
    assert len(log.after(None)) == 3


def test_kept_attempt_log_is_the_pulled_log_plus_the_streamed_tail(tmp_path: Path) -> None:
    log = tmp_path / agent_mod.LOG_FILE
    log.parent.mkdir(parents=True)
    log.write_text(_raw(1) + _raw(2) + "2026-12-02T10:00:03.000Z out li")  # a torn last line
    streamed = StreamedLog()
    for i in range(1, 5):
        streamed.add(_line(i))
    kept = keep_attempt_log(tmp_path, 1, streamed)
    assert kept == log.with_name("job.attempt-1.log")
    assert kept.read_text() == "".join(_raw(i) for i in range(1, 5)) and not log.exists()
    assert keep_attempt_log(tmp_path, 2, None) is None  # nothing pulled, nothing streamed
    # the run's last attempt keeps its job.log where it is, completed the same way
    log.write_text(_raw(7))
    streamed = StreamedLog()
    for i in (7, 8):
        streamed.add(_line(i))
    assert keep_attempt_log(tmp_path, 3, streamed, apart=False) == log
    assert log.read_text() == _raw(7) + _raw(8)
    assert attempt_logs(tmp_path) == [log.with_name("job.attempt-1.log"), log]


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


def test_an_attempt_costs_its_price_for_the_time_it_held_its_machine() -> None:
    start = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    ended = AttemptRecord(
        number=1,
        target="vast",
        started_at=start,
        ended_at=start + timedelta(hours=1),
        price_per_hour=Decimal("0.36"),
    )
    assert ended.cost(now=start + timedelta(hours=9)) == Decimal("0.36")  # its bill stopped
    running = ended.model_copy(update={"ended_at": None, "price_per_hour": Decimal("0.5")})
    assert running.cost(now=start + timedelta(hours=2)) == Decimal("1.0")
    assert ended.model_copy(update={"price_per_hour": None}).cost() is None


def test_a_resume_starts_from_checkpoints_and_outputs_and_skips_what_it_must(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "ckpt-1").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-1" / "w.bin").write_text("1")
    (run / "checkpoints" / "ckpt-2").write_text("2")
    (run / "checkpoints" / ".ckpt-3.tmp").write_text("half")
    (run / "outputs").mkdir()
    (run / "outputs" / "metrics.jsonl").write_text("{}\n")
    (run / "logs").mkdir()
    (run / "logs" / "job.log").write_text("not resumed from\n")
    got = resume_sources(run, skip=["ckpt-2"])
    assert {k: sorted(v) for k, v in got.items()} == {
        "checkpoints": ["ckpt-1/w.bin"],
        "outputs": ["metrics.jsonl"],
    }
    assert has_checkpoint(run) and has_checkpoint(run, ["ckpt-1", "ckpt-2"]) is False
    bare = resume_sources(run / "checkpoints")  # `--resume-from`: a bare checkpoints folder
    assert sorted(bare) == ["checkpoints"] and sorted(bare["checkpoints"]) == [
        "ckpt-1/w.bin",
        "ckpt-2",
    ]


def test_only_our_label_scheme_names_a_run_and_its_store() -> None:
    assert parse_label("launch:0a1b2c3d:hello-1a2b3c") == ("hello-1a2b3c", "0a1b2c3d")
    assert parse_label("launch-hello-1a2b3c") == ("hello-1a2b3c", "")  # an older launch's
    for label in ("launch-", "my-launch-x", "Launch-x", "", None, 42, "launch:0a1b2c3d:",
                  "launch:zz:hello-1a2b3c", "launch:hello-1a2b3c"):  # fmt: skip
        assert parse_label(label) is None


def _pulled_without_checkpoint(run: Path) -> None:
    """What a pull brings home from an attempt taken before its first checkpoint (a Vast
    instance outbid at epoch 2, a lost Kaggle kernel): the agent's log and status, no more."""
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "job.attempt-1.log").write_text("2026-01-01T00:00:01.000Z out epoch 1\n")
    (run / agent_mod.STATUS_FILE).write_text('{"phase": "running"}')


def _agent_env(tmp_path: Path, resume_from: Path | None, skip: list[str]) -> dict[str, str]:
    """The environment the agent gives the job in a workspace built from a resume, as the
    local target builds it (Vast pushes the same `resume_sources`, Kaggle and Colab pack them)."""
    ws = tmp_path / "workspace"
    if resume_from is not None:
        copy_resume_sources(resume_from, ws, skip)
    config = agent_mod.Config({"run_id": "r-1", "command": "true"}, str(ws))
    agent = agent_mod.Agent(str(ws), config)
    try:
        return agent._environment()  # pyright: ignore[reportPrivateUsage]
    finally:
        agent.log.close()


def test_a_run_folder_where_no_checkpoint_came_home_has_nothing_to_resume_from(
    tmp_path: Path,
) -> None:
    """Issue 20, item 11: read as a bare checkpoints folder, such a run folder offered its own
    logs/ as a checkpoint, and the next attempt failed resuming from …/checkpoints/logs."""
    run = tmp_path / "run"
    _pulled_without_checkpoint(run)
    assert has_checkpoint(run) is False
    assert agent_mod.CHECKPOINTS not in resume_sources(run)
    assert "LAUNCH_RESUME_FROM" not in _agent_env(tmp_path, run, [])


def test_a_checkpoints_folder_with_subfolders_but_no_checkpoint_file_holds_none(
    tmp_path: Path,
) -> None:
    """A folder holds a checkpoint only with a finished file in it: an empty one, one still being
    written, or the logs/ and status.json an earlier bad resume left there (issue 20, item 11)
    are nothing to resume from, and are never shipped as if they were."""
    run = tmp_path / "run"
    ckpts = run / agent_mod.CHECKPOINTS
    (ckpts / "ckpt-3").mkdir(parents=True)
    (ckpts / "ckpt-4").mkdir()
    (ckpts / "ckpt-4" / "w.bin.tmp").write_text("half")
    _pulled_without_checkpoint(ckpts)  # what the bad resume put there, pulled back
    (run / "logs").mkdir()
    (run / "logs" / "job.log").write_text("")
    for folder in (run, ckpts):
        assert has_checkpoint(folder) is False
        assert resume_sources(folder).get(agent_mod.CHECKPOINTS, {}) == {}
        assert "LAUNCH_RESUME_FROM" not in _agent_env(tmp_path / folder.name, folder, [])
    # beside a real checkpoint, only that one travels and the job resumes from it
    (ckpts / "ckpt-2").mkdir()
    (ckpts / "ckpt-2" / "w.bin").write_text("2")
    assert has_checkpoint(run) and has_checkpoint(ckpts)
    assert sorted(resume_sources(run)[agent_mod.CHECKPOINTS]) == ["ckpt-2/w.bin"]
    env = _agent_env(tmp_path / "real", run, [])
    assert env["LAUNCH_RESUME_FROM"].endswith(f"{agent_mod.CHECKPOINTS}/ckpt-2")
