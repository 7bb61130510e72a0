"""Edge paths of the orchestrator with a scripted target (the happy paths run for real in
tests/integration). Each test checks what a user could lose: a resource left billed, a run
recorded wrongly, cleanup skipped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from launcher.errors import SubmitError, TargetError
from launcher.orchestrator import Orchestrator
from launcher.state import FailureReason, RunHandle, RunStatus
from launcher.store import RunStore
from launcher.sync import PullResult
from launcher.targets.base import (
    CheckResult,
    Ledger,
    LogLine,
    Phase,
    Prepared,
    Target,
    TargetStatus,
)


class ScriptedTarget(Target):
    name: ClassVar[str] = "scripted"

    def __init__(self, phases: list[Phase | BaseException], tmp: Path) -> None:
        self.phases: Iterator[Phase | BaseException] = iter(phases)
        self.tmp = tmp
        self.calls: list[str] = []
        self.released: list[str] = []
        self.fail_submit_after_intent = False
        self.fail_pull = False
        self.last = Phase.STARTING

    @classmethod
    def check(cls) -> CheckResult:
        return CheckResult(ok=True)

    def prepare(self, spec: Any, run_id: str, workdir: Path) -> Prepared:
        self.calls.append("prepare")
        return Prepared(run_id=run_id, bundle_path=self.tmp / "b.tgz", bundle_digest="x")

    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        self.calls.append("submit")
        ticket = ledger.intent("box", f"box-{prepared.run_id}")
        if self.fail_submit_after_intent:
            raise SubmitError("the platform refused")
        ledger.created(ticket)
        return RunHandle(target=self.name, run_id=prepared.run_id)

    def status(self, handle: RunHandle) -> TargetStatus:
        nxt = next(self.phases, self.last)
        if isinstance(nxt, BaseException):
            raise nxt
        self.last = nxt
        return TargetStatus(
            phase=nxt,
            exit_code=0 if nxt is Phase.DONE else None,
            stop_reason="signal" if nxt is Phase.STOPPED else None,
        )

    def read_logs(self, handle: RunHandle, cursor: int) -> tuple[list[LogLine], int]:
        return [], cursor

    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        self.calls.append("pull")
        if self.fail_pull:
            raise TargetError("connection reset while pulling")
        return PullResult(copied=[], skipped_unchanged=0, bytes_copied=0, changed_during_copy=[])

    def cancel(self, handle: RunHandle) -> None:
        self.calls.append("cancel")

    def kill(self, handle: RunHandle) -> None:
        self.calls.append("kill")
        self.phases = iter([Phase.STOPPED])

    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        self.calls.append(f"cleanup(keep_data={keep_data})")

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        self.released.append(native_id)


SPEC = SimpleNamespace(
    name="job",
    source_path=Path("jobs/job.yaml"),
    digest=lambda: "d" * 64,
    resolved_dict=lambda: {"name": "job"},
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 5.0
        return self.t


def _orch(launch_home: Path, target: ScriptedTarget) -> Orchestrator:
    return Orchestrator(RunStore(launch_home), target, poll_s=0, clock=FakeClock())


def test_submit_failing_after_recording_releases_what_it_recorded(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([], tmp_path)
    target.fail_submit_after_intent = True
    orch = _orch(launch_home, target)
    with pytest.raises(SubmitError):
        orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-1")
    rec = orch.store.get("job-1")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.SUBMIT_FAILED
    assert target.released == ["box-job-1"]
    assert orch.store.resources(unreleased_only=True) == []


def test_happy_path_pulls_then_cleans_up_then_succeeds(launch_home: Path, tmp_path: Path) -> None:
    target = ScriptedTarget([Phase.STARTING, Phase.RUNNING, Phase.RUNNING, Phase.DONE], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-2")
    rec = orch.supervise("job-2", sync_every=1e9)
    assert rec.status is RunStatus.SUCCEEDED
    assert [e.status for e in rec.events][-4:] == [
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.PULLING,
        RunStatus.SUCCEEDED,
    ]
    assert target.calls[-2:] == ["pull", "cleanup(keep_data=False)"]
    assert orch.store.resources(unreleased_only=True) == []


def test_a_failed_final_pull_still_frees_the_machine_but_keeps_its_data(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.DONE], tmp_path)
    target.fail_pull = True
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-3")
    with pytest.raises(TargetError):
        orch.supervise("job-3", sync_every=1e9)
    rec = orch.store.get("job-3")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.PULL_FAILED
    assert "cleanup(keep_data=True)" in target.calls
    assert orch.store.resources(unreleased_only=True) == []


def test_a_platform_error_while_watching_salvages_then_records(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, TargetError("503 from the platform")], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-4")
    with pytest.raises(TargetError):
        orch.supervise("job-4", sync_every=1e9)
    assert target.calls[-3:] == ["cancel", "pull", "cleanup(keep_data=True)"]
    assert orch.store.get("job-4").status is RunStatus.FAILED


def test_ctrl_c_cancels_waits_for_the_checkpoint_pulls_and_cleans_up(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget(
        [Phase.RUNNING, KeyboardInterrupt(), Phase.RUNNING, Phase.STOPPED], tmp_path
    )
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-5")
    rec = orch.supervise("job-5", sync_every=1e9)
    assert rec.status is RunStatus.CANCELLED and rec.failure_reason is FailureReason.USER_CANCELLED
    i = target.calls.index("cancel")
    assert target.calls[i + 1 :] == ["pull", "cleanup(keep_data=True)"]


def test_second_ctrl_c_abandons_cleanup_and_leaves_the_ledger_for_gc(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, KeyboardInterrupt(), KeyboardInterrupt()], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-6")
    with pytest.raises(KeyboardInterrupt):
        orch.supervise("job-6", sync_every=1e9)
    assert not any(c.startswith("cleanup") for c in target.calls)
    assert [r.native_id for r in orch.store.resources(unreleased_only=True)] == ["box-job-6"]


def test_a_job_that_ignores_cancel_is_killed_after_its_grace(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING], tmp_path)  # RUNNING forever until killed
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-7")
    rec = orch.stop_and_finish("job-7", grace_s=10)
    assert "kill" in target.calls
    assert rec.status is RunStatus.CANCELLED


def test_periodic_pulls_happen_on_the_sync_interval(launch_home: Path, tmp_path: Path) -> None:
    target = ScriptedTarget([Phase.RUNNING] * 6 + [Phase.DONE], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-8")
    orch.supervise("job-8", sync_every=9)  # the fake clock moves 5 s per read
    assert target.calls.count("pull") >= 3  # in-run syncs plus the final pull


def test_a_bug_while_watching_still_frees_what_is_billed(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, RuntimeError("a bug in a target")], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-9")
    with pytest.raises(RuntimeError):
        orch.supervise("job-9", sync_every=1e9)
    assert "cleanup(keep_data=True)" in target.calls
    rec = orch.store.get("job-9")
    assert rec.status is RunStatus.FAILED and "a bug in a target" in rec.message
    assert orch.store.resources(unreleased_only=True) == []


def test_cost_counts_the_time_resources_were_held(launch_home: Path, tmp_path: Path) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.DONE], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-10")
    orch.store.update("job-10", price_per_hour="3.6")  # $0.001 per second
    rec = orch.supervise("job-10", sync_every=1e9)
    held = sum(
        s for st, s in rec.phase_durations() if st not in (RunStatus.PENDING, RunStatus.PREPARING)
    )
    assert rec.cost_usd is not None
    assert abs(float(rec.cost_usd) - held * 0.001) < 1e-4  # the final transition comes after


class MovingTarget(ScriptedTarget):
    """advance() swaps the machine once, as a pre-emption move does."""

    def advance(self, handle: RunHandle, ledger: Ledger) -> RunHandle | None:
        if handle.data.get("machine") != "second":
            return handle.model_copy(update={"data": {"machine": "second"}})
        return None

    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        self.calls.append(f"pull:{handle.data.get('machine')}")
        return PullResult(copied=[], skipped_unchanged=0, bytes_copied=0, changed_during_copy=[])

    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        self.calls.append(f"cleanup:{handle.data.get('machine')}")


def test_the_final_pull_and_cleanup_use_the_handle_advance_returned(
    launch_home: Path, tmp_path: Path
) -> None:
    target = MovingTarget([Phase.RUNNING, Phase.RUNNING, Phase.DONE], tmp_path)
    orch = _orch(launch_home, target)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-11")
    rec = orch.supervise("job-11", sync_every=1e9)
    assert rec.status is RunStatus.SUCCEEDED
    assert rec.handle is not None and rec.handle.data == {"machine": "second"}
    assert target.calls[-2:] == ["pull:second", "cleanup:second"]


def test_the_time_limit_backstop_counts_only_time_the_job_runs(
    launch_home: Path, tmp_path: Path
) -> None:
    """A queue (between chained Kaggle sessions, before a new Vast machine after a move) is not
    the job's time: 150 s queued under a 70 s backstop stops nothing; 100 s running does."""
    queued = ScriptedTarget([Phase.QUEUED] * 30 + [Phase.RUNNING, Phase.DONE], tmp_path)
    orch = _orch(launch_home, queued)
    orch.start(SPEC, output_dir=tmp_path / "out", run_id="job-q")
    rec = orch.supervise("job-q", sync_every=1e9, time_limit_s=10, grace_s=0)
    assert "cancel" not in queued.calls and rec.status is RunStatus.SUCCEEDED

    running = ScriptedTarget([Phase.RUNNING] * 20 + [Phase.STOPPED], tmp_path)
    orch = _orch(launch_home, running)
    orch.start(SPEC, output_dir=tmp_path / "out2", run_id="job-r")
    orch.supervise("job-r", sync_every=1e9, time_limit_s=10, grace_s=0)
    assert "cancel" in running.calls
