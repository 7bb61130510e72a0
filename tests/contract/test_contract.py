"""One contract, every target (fsspec's abstract test suite): the same scenarios through the real
CLI, as a user runs it, on local docker, a local process, the Vast emulator and the Kaggle
emulator. Every case ends by asserting that nothing of the run is left running or billed on the
platform and that every resource the launcher recorded was released.

The launcher is a real subprocess started with default signal dispositions, so it can be
signalled and killed; the job is the hello workload (a real training loop with checkpoints,
metrics and resume).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from launcher import api
from launcher.state import RunHandle
from tests.conftest import default_signals, launch_cmd
from tests.contract.platforms import Platform, unreleased
from tests.terminal import in_terminal

pytestmark = pytest.mark.docker

SLOW = "run=python3 -m hello.train --epochs {n} --epoch-seconds {s}"


class Launcher:
    """A `launch run` in the background, its output in files the test can read as it runs."""

    def __init__(self, project: Path, platform: Platform, *args: str) -> None:
        self.out = project / "launch.out"
        self.err = project / "launch.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*launch_cmd(), "run", "jobs/hello.yaml", *platform.args, *args],
                cwd=project,
                env=platform.env,
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
                preexec_fn=default_signals,
            )

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for_line(self, needle: str, timeout: float = 120) -> None:
        wait_for(lambda: needle in self.out.read_text(), timeout, f"{needle!r}", self)

    def finish(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def long_job_running(project: Path, platform: Platform) -> Launcher:
    """`launch run` of a 60-epoch job, once its second epoch is done."""
    run = Launcher(
        project, platform, "--set", SLOW.format(n=60, s=0.4), "--set", "limits.grace_seconds=5"
    )
    run.wait_for_line("epoch 2/60")
    return run


def wait_for(
    cond: Callable[[], bool], timeout: float, what: str, run: Launcher | None = None
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"launch exited {run.proc.returncode} before {what}:\n{run.text()}")
        time.sleep(0.05)
    pytest.fail(
        f"timed out after {timeout}s waiting for {what}" + (f":\n{run.text()}" if run else "")
    )


def launch(
    project: Path, platform: Platform, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), *args], cwd=project, env=platform.env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def record(project: Path, platform: Platform, run: str = "last") -> dict[str, Any]:
    proc = launch(project, platform, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def db_status(home: Path) -> tuple[str, str] | None:
    """(run id, status) of the newest run, read straight from the store (fast, no CLI)."""
    path = home / "runs.db"
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path, timeout=30) as db:
            query = "SELECT id, status FROM runs ORDER BY created_at DESC LIMIT 1"
            row = db.execute(query).fetchone()
    except sqlite3.OperationalError:  # the store is being created
        return None
    return (row[0], row[1]) if row else None


def pause_in(run: Launcher, home: Path, phase: str) -> str:
    """SIGSTOP the launcher while the run is in `phase` and not in the middle of a write to
    the store (a launcher suspended mid-write holds its lock: `launch cancel` would wait for
    it; the store says so after 30 s). Returns the run id."""
    for _ in range(200):
        wait_for(lambda: (db_status(home) or ("", ""))[1] == phase, 120, phase, run)
        os.killpg(run.proc.pid, signal.SIGSTOP)
        run_id, now = db_status(home) or ("", "")
        with sqlite3.connect(home / "runs.db", timeout=0.2, isolation_level=None) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
                writable = True
            except sqlite3.OperationalError:
                writable = False
        if now == phase and writable:
            return run_id
        assert now == phase, f"moved on to {now} before the pause"
        os.killpg(run.proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    pytest.fail("never caught the launcher outside a store write")


def epochs(run_dir: Path) -> list[int]:
    lines = (run_dir / "outputs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def every_log(run_dir: Path) -> str:
    logs = sorted((run_dir / "logs").glob("job.attempt-*.log")) + [run_dir / "logs" / "job.log"]
    return "".join(p.read_text() for p in logs if p.is_file())


def assert_nothing_left(platform: Platform, home: Path) -> None:
    """Nothing of any run on the platform, every recorded resource released (a stopped
    container or an ended session may take a moment to go)."""
    end = time.monotonic() + 30
    while platform.leftovers() and time.monotonic() < end:
        time.sleep(0.5)
    assert platform.leftovers() == [], f"left on {platform.name}: {platform.leftovers()}"
    assert unreleased(home) == []


def assert_stopped_with_a_checkpoint(rec: dict[str, Any]) -> None:
    run_dir = Path(rec["output_dir"])
    done = epochs(run_dir)
    assert done and done == list(range(1, len(done) + 1)), done
    assert (run_dir / "checkpoints" / f"ckpt-epoch-{done[-1]:04d}.json").is_file()
    assert "checkpoint saved on SIGTERM" in every_log(run_dir)


# ---- the cases ------------------------------------------------------------------------------


def test_a_run_streams_its_log_pulls_everything_and_records_what_happened(
    project: Path, platform: Platform, launch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = launch(
        project, platform, "run", "jobs/hello.yaml", "--profile", "smoke", *platform.args
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "epoch 1/3" in proc.stdout  # streamed while it ran
    rec = record(project, platform)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0
    run_dir = Path(rec["output_dir"])
    assert epochs(run_dir) == [1, 2, 3]
    assert (run_dir / "checkpoints" / "ckpt-epoch-0003.json").is_file()
    assert json.loads((run_dir / "outputs" / "summary.json").read_text())["epochs_done"] == 3
    [attempt] = rec["attempts"]
    assert attempt["end"] == "succeeded" and attempt["where"] and attempt["ended_at"]
    assert rec["cost_usd"] is not None and float(rec["cost_usd"]) >= 0
    logs = launch(project, platform, "logs", rec["id"])
    assert logs.returncode == 0 and "epoch 3/3" in logs.stdout
    again = launch(project, platform, "pull", rec["id"])  # repeatable, nothing new
    assert again.returncode == 0 and again.stdout.startswith("0 file(s) pulled"), again.stdout
    # cleanup of a finished attempt, twice more, from this process: silent
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    session = api.Session(home=launch_home)
    target = session.target(rec["target"])
    handle = target.load_handle(RunHandle.model_validate(rec["handle"]))
    target.cleanup(handle)
    target.cleanup(handle)
    assert_nothing_left(platform, launch_home)


def test_cancel_from_another_terminal_stops_the_job_with_a_checkpoint(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    run = long_job_running(project, platform)
    run_id = record(project, platform)["id"]
    cancel = launch(project, platform, "cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.strip() == f"{run_id}: cancelled", cancel.stdout
    assert run.finish() == 130, run.text()
    rec = record(project, platform, run_id)
    assert (rec["status"], rec["failure_reason"]) == ("cancelled", "user_cancelled")
    assert rec["stop_reason"] == "cancel"
    assert_stopped_with_a_checkpoint(rec)
    assert_nothing_left(platform, launch_home)


def test_cancel_before_the_job_runs_ends_the_run_without_starting_it(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    """The launcher is paused in the phase before the job runs (preparing: a large bundle;
    provisioning: a machine or kernel being set up) while `launch cancel` asks, from another
    process, for the run to stop; the stored request is what the launcher finds."""
    for rel, size in platform.extra_files.items():
        (project / rel).write_bytes(os.urandom(size))
    run = Launcher(project, platform, "--set", SLOW.format(n=60, s=0.4))
    run_id = pause_in(run, launch_home, platform.early_phase)
    try:
        cancel = launch(project, platform, "cancel", run_id, "--no-wait")
        assert cancel.returncode == 0, cancel.stderr
    finally:
        os.killpg(run.proc.pid, signal.SIGCONT)
    assert run.finish() == 130, run.text()
    rec = record(project, platform, run_id)
    assert (rec["status"], rec["failure_reason"]) == ("cancelled", "user_cancelled"), rec
    if platform.never_runs_if_cancelled_early:
        assert "running" not in [e["status"] for e in rec["events"]]
        assert "epoch 1/" not in run.text()
        # nothing ran, so nothing was saved: say so, and never offer a resume from nothing
        assert "no checkpoint was saved" in run.text(), run.text()
        assert "checkpoints were pulled" not in run.text() and "--resume-from" not in run.text()
    assert_nothing_left(platform, launch_home)


def _commands_work(project: Path, platform: Platform, run_id: str, phase: str) -> None:
    """What a user types about a live run, piped and at a terminal: no internal error, no
    traceback, and one clear line where a command cannot answer yet."""
    piped = [
        ["status", run_id], ["status", run_id, "--refresh"], ["ls"], ["logs", run_id],
        ["report"], ["plan", "jobs/hello.yaml", *platform.args], ["pull", run_id],
    ]  # fmt: skip
    at_terminal = [["status", run_id], ["ls"], ["logs", run_id]]
    for command, terminal in [(c, False) for c in piped] + [(c, True) for c in at_terminal]:
        args = [*launch_cmd(), *command]
        if terminal:
            code, text = in_terminal(args, cwd=project, env=platform.env)
        else:
            proc = subprocess.run(
                args, cwd=project, env=platform.env, capture_output=True, text=True, timeout=120
            )
            code, text = proc.returncode, proc.stdout + proc.stderr
        what = f"`launch {' '.join(command)}` {'at a terminal' if terminal else 'piped'} " + (
            f"while {phase}:\n{text}"
        )
        assert "internal error" not in text and "Traceback" not in text, what
        if command[0] == "pull" and code != 0:  # nothing to pull yet may be said, once
            assert [line for line in text.splitlines() if line.startswith("error:")], what
        else:
            assert code == 0, what


def test_every_command_answers_about_a_live_run_before_and_while_it_runs(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    """`status`, `ls`, `logs`, `report`, `plan` and `pull` on a run being set up (the launcher
    paused there) and on a running one, then `cancel`: once, `status` on any unfinished run
    died with an internal error."""
    for rel, size in platform.extra_files.items():
        (project / rel).write_bytes(os.urandom(size))
    run = Launcher(
        project, platform, "--set", SLOW.format(n=60, s=0.4), "--set", "limits.grace_seconds=5"
    )
    run_id = pause_in(run, launch_home, platform.early_phase)
    try:
        _commands_work(project, platform, run_id, platform.early_phase)
    finally:
        os.killpg(run.proc.pid, signal.SIGCONT)
    run.wait_for_line("epoch 2/60")
    _commands_work(project, platform, run_id, "running")
    cancel = launch(project, platform, "cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert run.finish() == 130, run.text()
    assert_nothing_left(platform, launch_home)


def test_sigterm_to_the_launcher_stops_the_job_pulls_and_frees_everything(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    run = long_job_running(project, platform)
    os.killpg(run.proc.pid, signal.SIGTERM)  # a closed CI job, systemd, `kill`
    assert run.finish() == 130, run.text()
    assert "SIGTERM: stopping the job" in run.text() and "Traceback" not in run.text()
    rec = record(project, platform)
    assert (rec["status"], rec["stop_reason"]) == ("cancelled", "interrupt")
    assert_stopped_with_a_checkpoint(rec)
    assert_nothing_left(platform, launch_home)


def test_a_killed_launcher_leaves_a_trail_gc_follows_and_pull_completes(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    run = long_job_running(project, platform)
    run_id = record(project, platform)["id"]
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.finish(10)
    assert platform.leftovers(), "the job should outlive its launcher"
    gc = launch(project, platform, "gc", "--target", record(project, platform)["target"], "--yes")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert run_id in gc.stdout and "epoch" not in gc.stdout  # the job's log is not gc's output
    rec = record(project, platform, run_id)
    assert (rec["status"], rec["failure_reason"]) == ("cancelled", "launcher_lost"), rec
    again = launch(project, platform, "gc", "--target", rec["target"], "--yes")
    assert "nothing to clean up" in again.stdout, again.stdout + again.stderr
    pulled = launch(project, platform, "pull", run_id)
    assert pulled.returncode == 0, pulled.stderr
    assert_stopped_with_a_checkpoint(rec)
    assert_nothing_left(platform, launch_home)


def test_an_attempt_the_platform_ends_is_resumed_and_nothing_is_lost(
    project: Path, platform: Platform, launch_home: Path
) -> None:
    """A pre-empted instance, a session cap, a killed container or process: the next attempt
    starts from the newest pulled checkpoint, and every epoch's metrics line and log line is
    there exactly once in the end."""
    n = 14
    run = Launcher(
        project, platform, "--set", SLOW.format(n=n, s=0.5), "--set", "outputs.sync_every=1s",
        "--set", "limits.max_attempts=2", "--set", "limits.grace_seconds=5",
    )  # fmt: skip
    run.wait_for_line("epoch 4/")
    first = record(project, platform)
    run_dir = Path(first["output_dir"])
    if platform.name != "kaggle":  # Kaggle saves outputs when a session ends, not before
        wait_for(lambda: len(list((run_dir / "checkpoints").glob("ckpt-*"))) >= 2, 60,
                 "two pulled checkpoints", run)  # fmt: skip
    platform.end_attempt(first)
    assert run.finish(240) == 0, run.text()
    rec = record(project, platform)
    assert rec["status"] == "succeeded", rec
    assert [a["end"] for a in rec["attempts"]][-1] == "succeeded"
    assert [a["end"] for a in rec["attempts"]][0] in ("preempted", "lost"), rec["attempts"]
    assert len(rec["attempts"]) == 2
    assert epochs(run_dir) == list(range(1, n + 1))  # none lost, none written twice
    assert json.loads((run_dir / "outputs" / "summary.json").read_text())["epochs_done"] == n
    logs = every_log(run_dir)
    for e in range(1, n + 1):
        assert f"epoch {e}/{n}" in logs, f"epoch {e}'s log line is lost"
    assert (run_dir / "logs" / "job.attempt-1.log").is_file()
    assert "resuming from" in (run_dir / "logs" / "job.log").read_text()
    # cost: each attempt's $/h for the time it held its machine, summed
    held = [
        datetime.fromisoformat(a["ended_at"]) - datetime.fromisoformat(a["started_at"])
        for a in rec["attempts"]
    ]
    prices = [float(a["price_per_hour"]) for a in rec["attempts"]]
    cost = sum(p * h.total_seconds() / 3600 for p, h in zip(prices, held, strict=True))
    assert float(rec["cost_usd"]) == pytest.approx(cost, abs=1e-5)
    assert_nothing_left(platform, launch_home)
