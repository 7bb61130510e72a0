"""Edge paths of the orchestrator with a scripted target (the happy paths run for real in
tests/integration and the contract suite). Each test checks what a user could lose: a resource
left billed, a run recorded wrongly, cleanup skipped, an attempt not started or started twice."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from launcher import agent as agent_mod
from launcher.attempts import copy_resume_sources
from launcher.errors import NoCapacityError, NothingToResumeError, SubmitError, TargetError
from launcher.orchestrator import Orchestrator, SilentReporter
from launcher.signals import Interrupted
from launcher.state import AttemptEnd, FailureReason, RunStatus, StopReason
from launcher.store import RunStore
from launcher.sync import PullResult
from launcher.targets.base import (
    AgentConfig,
    AttemptSpec,
    CheckResult,
    Handle,
    Ledger,
    LogLine,
    Phase,
    Prepared,
    Target,
    TargetStatus,
)

Step = Phase | TargetStatus | BaseException


class ScriptedPrepared(Prepared):
    pass


class ScriptedHandle(Handle):
    machine: str = "first"


class ScriptedTarget(Target[ScriptedPrepared, ScriptedHandle]):
    """Plays a list of phases, one per status() call; each attempt gets the next script."""

    name: ClassVar[str] = "scripted"
    prepared_model: ClassVar[type[Prepared]] = ScriptedPrepared
    handle_model: ClassVar[type[Handle]] = ScriptedHandle

    def __init__(self, *scripts: list[Step], tmp: Path, max_attempts: int = 1) -> None:
        super().__init__(tmp)
        self.scripts = list(scripts)
        self.steps: Iterator[Step] = iter(())
        self.tmp = tmp
        self.max_attempts = max_attempts
        self.calls: list[str] = []
        self.released: list[str] = []
        self.attempts: list[AttemptSpec] = []
        self.fail_submit: BaseException | None = None
        self.fail_pull = False
        self.pull_failures = 0  # this many pulls fail, then they work
        self.cancel_failures = 0  # this many cancels are refused, then they work
        self.last: TargetStatus = TargetStatus(phase=Phase.STARTING)
        self.lines: list[LogLine] = []

    @classmethod
    def check(cls) -> CheckResult:
        return CheckResult(ok=True)

    def prepare(self, spec: Any, run_id: str, workdir: Path) -> ScriptedPrepared:
        self.calls.append("prepare")
        return ScriptedPrepared(
            run_id=run_id,
            bundle_path=self.tmp / "b.tgz",
            bundle_digest="x",
            agent=AgentConfig(command="true"),
            max_attempts=self.max_attempts,
            more_attempts_hint="scripted has no more",
        )

    def submit(
        self,
        prepared: ScriptedPrepared,
        ledger: Ledger,
        attempt: AttemptSpec,
        previous: ScriptedHandle | None,
    ) -> ScriptedHandle:
        self.calls.append(f"submit:{attempt.number}")
        self.attempts.append(attempt)
        ticket = ledger.intent("box", f"box-{prepared.run_id}-{attempt.number}")
        if self.fail_submit is not None:
            raise self.fail_submit
        ledger.created(ticket)
        self.steps = iter(self.scripts.pop(0) if self.scripts else [])
        self.last = TargetStatus(phase=Phase.STARTING)
        return ScriptedHandle(
            run_id=prepared.run_id,
            attempt=attempt.number,
            price_per_hour=Decimal("3.6"),  # $0.001 per second
            machine=f"m{attempt.number}",
        )

    def describe(self, handle: ScriptedHandle) -> str:
        return f"machine {handle.machine}"

    def status(self, handle: ScriptedHandle) -> TargetStatus:
        nxt = next(self.steps, self.last)
        if isinstance(nxt, BaseException):
            raise nxt
        st = nxt if isinstance(nxt, TargetStatus) else _status(nxt)
        self.last = st
        return st

    def read_logs(self, handle: ScriptedHandle, cursor: int) -> tuple[list[LogLine], int]:
        return self.lines[cursor:], len(self.lines)

    def pull(self, handle: ScriptedHandle, dest: Path) -> PullResult:
        self.calls.append(f"pull:{handle.machine}")
        if self.fail_pull or self.pull_failures > 0:
            self.pull_failures -= 1
            raise TargetError("connection reset while pulling")
        return PullResult()

    def cancel(self, handle: ScriptedHandle) -> None:
        self.calls.append(f"cancel:{handle.machine}")
        if self.cancel_failures > 0:
            self.cancel_failures -= 1
            raise TargetError("the platform did not take the stop")

    def kill(self, handle: ScriptedHandle) -> None:
        self.calls.append("kill")
        self.steps = iter([Phase.STOPPED])

    def cleanup(self, handle: ScriptedHandle, *, keep_data: bool = False) -> None:
        self.calls.append(f"cleanup:{handle.machine}(keep_data={keep_data})")

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        self.released.append(native_id)


def _status(phase: Phase) -> TargetStatus:
    return TargetStatus(
        phase=phase,
        exit_code=0 if phase is Phase.DONE else None,
        stop_reason="signal" if phase is Phase.STOPPED else None,
        message="outbid" if phase is Phase.PREEMPTED else "",
    )


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 5.0
        return self.t


def _spec(**limits: Any) -> Any:
    full = {"max_hours": None, "grace_seconds": 30.0, "max_cost_usd": None, "max_attempts": None}
    full.update(limits)
    return SimpleNamespace(
        name="job",
        source_path=Path("jobs/job.yaml"),
        digest=lambda: "d" * 64,
        resolved_dict=lambda: {"name": "job"},
        limits=SimpleNamespace(**full),
        outputs=SimpleNamespace(sync_every=1e9),
    )


def _orch(launch_home: Path, target: ScriptedTarget) -> Orchestrator:
    return Orchestrator(
        RunStore(launch_home), target, poll_s=0, clock=FakeClock(), sleep=lambda _s: None
    )


def _start(orch: Orchestrator, tmp_path: Path, run_id: str, **limits: Any) -> None:
    orch.start(_spec(**limits), output_dir=tmp_path / run_id, run_id=run_id)


def test_submit_failing_after_recording_releases_what_it_recorded(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget(tmp=tmp_path)
    target.fail_submit = SubmitError("the platform refused")
    orch = _orch(launch_home, target)
    with pytest.raises(SubmitError):
        _start(orch, tmp_path, "job-1")
    rec = orch.store.get("job-1")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.SUBMIT_FAILED
    assert target.released == ["box-job-1-1"]
    assert orch.store.resources(unreleased_only=True) == []
    assert [a.end for a in rec.attempts] == [AttemptEnd.SUBMIT_FAILED]


def test_happy_path_pulls_then_cleans_up_then_succeeds(launch_home: Path, tmp_path: Path) -> None:
    target = ScriptedTarget(
        [Phase.STARTING, Phase.RUNNING, Phase.RUNNING, Phase.DONE], tmp=tmp_path
    )
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-2")
    rec = orch.supervise("job-2")
    assert rec.status is RunStatus.SUCCEEDED
    assert [e.status for e in rec.events][-4:] == [
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.PULLING,
        RunStatus.SUCCEEDED,
    ]
    assert target.calls[-2:] == ["pull:m1", "cleanup:m1(keep_data=False)"]
    assert orch.store.resources(unreleased_only=True) == []
    [attempt] = rec.attempts
    assert attempt.end is AttemptEnd.SUCCEEDED and attempt.where == "machine m1"
    assert attempt.ran_s > 0 and attempt.ended_at is not None


def test_a_failed_final_pull_still_frees_the_machine_but_keeps_its_data(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.DONE], tmp=tmp_path)
    target.fail_pull = True
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-3")
    with pytest.raises(TargetError):
        orch.supervise("job-3")
    rec = orch.store.get("job-3")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.PULL_FAILED
    assert "cleanup:m1(keep_data=True)" in target.calls
    assert orch.store.resources(unreleased_only=True) == []


def test_a_final_pull_that_fails_for_a_while_is_retried_and_loses_nothing(
    launch_home: Path, tmp_path: Path
) -> None:
    """A dropped connection at the end of a long run: the last pull is tried again with a
    backoff (LAUNCH_FINAL_PULL_S), and the run ends as it would have."""
    target = ScriptedTarget([Phase.RUNNING, Phase.DONE], tmp=tmp_path)
    target.pull_failures = 3
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-r")
    rec = orch.supervise("job-r")
    assert rec.status is RunStatus.SUCCEEDED, rec.message
    assert target.calls.count("pull:m1") >= 4
    assert target.calls[-1] == "cleanup:m1(keep_data=False)"


class MachineHoldsTheData(ScriptedTarget):
    """Like a Vast instance: what was not pulled lives only on the billed machine."""

    data_dies_with_machine: ClassVar[bool] = True


def test_a_final_pull_that_never_works_keeps_the_machine_until_launch_pull_then_gc(
    launch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher import api
    from launcher.gc import apply_gc, plan_gc
    from launcher.state import ResourceState

    monkeypatch.setenv("LAUNCH_FINAL_PULL_S", "60")
    target = MachineHoldsTheData([Phase.RUNNING, Phase.DONE], tmp=tmp_path)
    target.fail_pull = True
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-k")
    with pytest.raises(TargetError) as err:
        orch.supervise("job-k")
    assert "machine m1 is kept" in err.value.message and "$3.6/h" in err.value.message
    assert err.value.hint and "`launch pull job-k`" in err.value.hint and "launch gc" in err.value.hint
    assert target.calls.count("pull:m1") > 1  # retried before giving up
    assert not [c for c in target.calls if c.startswith("cleanup")], target.calls
    assert target.released == []
    [kept] = orch.store.resources(unreleased_only=True)
    assert kept.state is ResourceState.KEPT
    rec = orch.store.get("job-k")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.PULL_FAILED

    class Session(api.Session):
        def target(self, name: str) -> Any:
            return target

    session = Session(home=launch_home)
    waiting = plan_gc(session, targets=())
    assert waiting.actions == [], "gc must not free a machine whose outputs are not home"
    assert any("keeping box box-job-k-1 of job-k" in s for s in waiting.skipped), waiting.skipped
    target.fail_pull = False  # the connection is back
    api.pull(session, "job-k")
    [release] = plan_gc(session, targets=()).actions
    apply_gc(session, [release])
    assert target.released == ["box-job-k-1"]
    assert orch.store.resources(unreleased_only=True) == []


def test_a_platform_error_while_watching_salvages_then_records(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, TargetError("503 from the platform")], tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-4")
    with pytest.raises(TargetError):
        orch.supervise("job-4")
    assert target.calls[-3:] == ["cancel:m1", "pull:m1", "cleanup:m1(keep_data=True)"]
    assert orch.store.get("job-4").status is RunStatus.FAILED
    assert orch.store.resources(unreleased_only=True) == []


@pytest.mark.parametrize("signum", [2, 15, 1])  # SIGINT, SIGTERM, SIGHUP
def test_a_signal_stops_the_job_waits_for_the_checkpoint_pulls_and_cleans_up(
    launch_home: Path, tmp_path: Path, signum: int
) -> None:
    target = ScriptedTarget(
        [Phase.RUNNING, Interrupted(signum), Phase.RUNNING, Phase.STOPPED], tmp=tmp_path
    )
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-5")
    rec = orch.supervise("job-5")
    assert rec.status is RunStatus.CANCELLED and rec.failure_reason is FailureReason.USER_CANCELLED
    assert rec.stop_reason is StopReason.INTERRUPT
    i = target.calls.index("cancel:m1")
    assert target.calls[i + 1 :] == ["pull:m1", "cleanup:m1(keep_data=False)"]


def test_second_signal_abandons_cleanup_and_leaves_the_ledger_for_gc(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, KeyboardInterrupt(), Interrupted(15)], tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-6")
    with pytest.raises(KeyboardInterrupt):
        orch.supervise("job-6")
    assert not any(c.startswith("cleanup") for c in target.calls)
    assert [r.native_id for r in orch.store.resources(unreleased_only=True)] == ["box-job-6-1"]


def test_a_stop_asked_by_another_process_before_the_job_started_never_starts_it(
    launch_home: Path, tmp_path: Path
) -> None:
    """`launch cancel` from a second terminal while the machine is still provisioning: the
    request is stored, and the launcher that drives the run acts on it at its next poll."""
    target = ScriptedTarget([Phase.PROVISIONING] * 50, tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-7")
    RunStore(launch_home).request_stop("job-7", StopReason.CANCEL)  # "another process"
    rec = orch.supervise("job-7")
    assert rec.status is RunStatus.CANCELLED and rec.failure_reason is FailureReason.USER_CANCELLED
    assert target.calls[-3:] == ["cancel:m1", "pull:m1", "cleanup:m1(keep_data=False)"]
    assert RunStatus.RUNNING not in [e.status for e in rec.events]
    assert orch.store.resources(unreleased_only=True) == []


def test_a_stop_asked_while_preparing_ends_the_run_before_anything_is_rented(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget(tmp=tmp_path)
    orch = _orch(launch_home, target)
    real_prepare = target.prepare

    def prepare_then_cancelled(spec: Any, run_id: str, workdir: Path) -> ScriptedPrepared:
        RunStore(launch_home).request_stop(run_id, StopReason.CANCEL)
        return real_prepare(spec, run_id, workdir)

    target.prepare = prepare_then_cancelled  # type: ignore[method-assign]
    _start(orch, tmp_path, "job-7b")
    rec = orch.store.get("job-7b")
    assert rec.status is RunStatus.CANCELLED and not any(
        c.startswith("submit") for c in target.calls
    )


def test_a_job_that_ignores_a_stop_is_killed_after_its_grace(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING] * 1000, tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-8", grace_seconds=10)
    rec = orch.stop_and_finish("job-8", StopReason.CANCEL)
    assert "kill" in target.calls
    assert rec.status is RunStatus.CANCELLED


def test_a_preempted_attempt_is_followed_by_the_next_from_the_pulled_checkpoint(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget(
        [Phase.RUNNING, Phase.RUNNING, Phase.PREEMPTED],
        [Phase.RUNNING, Phase.DONE],
        tmp=tmp_path,
        max_attempts=3,
    )
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-9", max_hours=1.0)
    out = tmp_path / "job-9"
    ckpt = out / agent_mod.CHECKPOINTS / "ckpt-1"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("state")
    rec = orch.supervise("job-9")
    assert rec.status is RunStatus.SUCCEEDED
    assert [a.end for a in rec.attempts] == [AttemptEnd.PREEMPTED, AttemptEnd.SUCCEEDED]
    assert [a.where for a in rec.attempts] == ["machine m1", "machine m2"]
    # the first machine was pulled and freed before the second was asked for
    assert target.calls.index("cleanup:m1(keep_data=False)") < target.calls.index("submit:2")
    second = target.attempts[1]
    assert second.number == 2 and second.resume_from == out
    assert second.time_left_s is not None and second.time_left_s < 3600
    events = [e.status for e in rec.events]
    assert events.count(RunStatus.PROVISIONING) == 2 and RunStatus.PREEMPTED in events
    assert orch.store.resources(unreleased_only=True) == []
    # each attempt billed from its submit to its end, summed
    assert rec.cost_usd is not None
    assert rec.cost_usd == sum(a.cost() or 0 for a in rec.attempts)


def test_the_log_streamed_from_a_lost_machine_is_kept_with_its_attempt(
    launch_home: Path, tmp_path: Path
) -> None:
    """The pre-empted machine cannot be pulled any more: the lines streamed after the last pull
    complete the pulled log, kept as logs/job.attempt-1.log; the next attempt's log is apart."""
    target = ScriptedTarget(
        [Phase.RUNNING, Phase.RUNNING, Phase.PREEMPTED], [Phase.DONE], tmp=tmp_path, max_attempts=2
    )
    target.lines = [
        LogLine(at=f"2026-01-01T00:00:0{i}.000Z", stream="out", text=f"epoch {i}")
        for i in range(1, 5)
    ]
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-10")
    log = tmp_path / "job-10" / agent_mod.LOG_FILE
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01T00:00:01.000Z out epoch 1\n2026-01-01T00:00:02.000Z out epoch 2\n")
    orch.supervise("job-10")
    kept = log.with_name("job.attempt-1.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in kept] == ["epoch 1", "epoch 2", "epoch 3", "epoch 4"]


def test_when_attempts_run_out_the_run_fails_saying_what_would_allow_more(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.PREEMPTED], tmp=tmp_path, max_attempts=1)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-11")
    rec = orch.supervise("job-11")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.PREEMPTED
    assert "1 of 1 attempt(s) (scripted has no more)" in rec.message
    assert "--resume-from job-11" in rec.message
    assert target.calls.count("submit:1") == 1 and "submit:2" not in target.calls


def test_limits_max_attempts_overrides_the_targets_default(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget(
        [Phase.PREEMPTED], [Phase.LOST], [Phase.DONE], tmp=tmp_path, max_attempts=1
    )
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-12", max_attempts=3)
    rec = orch.supervise("job-12")
    assert rec.status is RunStatus.SUCCEEDED
    assert [a.end for a in rec.attempts] == [
        AttemptEnd.PREEMPTED,
        AttemptEnd.LOST,
        AttemptEnd.SUCCEEDED,
    ]


def test_a_next_attempt_the_platform_refuses_ends_the_run_with_its_reason(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.PREEMPTED], tmp=tmp_path, max_attempts=2)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-13")
    target.fail_submit = NoCapacityError("the weekly quota is used up")
    rec = orch.supervise("job-13")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.NO_CAPACITY
    assert "weekly quota" in rec.message
    assert orch.store.resources(unreleased_only=True) == []


def test_a_stopped_run_is_not_continued_on_another_machine(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING] * 3 + [Phase.PREEMPTED], tmp=tmp_path, max_attempts=3)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-14")
    orch.store.request_stop("job-14", StopReason.CANCEL)
    rec = orch.supervise("job-14")
    assert rec.status is RunStatus.CANCELLED and "submit:2" not in target.calls


def test_the_cost_cap_stops_the_job_before_it_is_passed(launch_home: Path, tmp_path: Path) -> None:
    target = ScriptedTarget([Phase.RUNNING] * 100000, tmp=tmp_path)
    orch = _orch(launch_home, target)
    # $3.6/h with a 0 s grace: the margin is a minute ($0.06), over a cap of $0.05 at once
    _start(orch, tmp_path, "job-15", max_cost_usd=0.05, grace_seconds=0)
    target.steps = iter([Phase.RUNNING, Phase.RUNNING, Phase.STOPPED])
    rec = orch.supervise("job-15")
    assert rec.status is RunStatus.FAILED and rec.failure_reason is FailureReason.COST_LIMIT
    assert rec.stop_reason is StopReason.COST_LIMIT
    assert "cancel:m1" in target.calls


def test_the_time_limit_backstop_counts_only_time_the_job_runs(
    launch_home: Path, tmp_path: Path
) -> None:
    """A queue (between chained Kaggle sessions, before a new Vast machine after a move) is not
    the job's time: 150 s queued under a 70 s backstop stops nothing; 100 s running does."""
    limit = dict(max_hours=10 / 3600, grace_seconds=0)
    queued = ScriptedTarget([Phase.QUEUED] * 30 + [Phase.RUNNING, Phase.DONE], tmp=tmp_path)
    orch = _orch(launch_home, queued)
    _start(orch, tmp_path, "job-q", **limit)
    rec = orch.supervise("job-q")
    assert "cancel:m1" not in queued.calls and rec.status is RunStatus.SUCCEEDED

    running = ScriptedTarget([Phase.RUNNING] * 20 + [Phase.STOPPED], tmp=tmp_path)
    orch = _orch(launch_home, running)
    _start(orch, tmp_path, "job-r", **limit)
    rec = orch.supervise("job-r")
    assert "cancel:m1" in running.calls
    assert rec.failure_reason is FailureReason.TIMED_OUT


def test_a_bug_while_watching_still_frees_what_is_billed(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, RuntimeError("a bug in a target")], tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-16")
    with pytest.raises(RuntimeError):
        orch.supervise("job-16")
    assert "cleanup:m1(keep_data=True)" in target.calls
    rec = orch.store.get("job-16")
    assert rec.status is RunStatus.FAILED and "a bug in a target" in rec.message
    assert orch.store.resources(unreleased_only=True) == []


def test_the_prepared_job_and_policy_are_stored_for_any_process(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.DONE], tmp=tmp_path, max_attempts=2)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-17", max_hours=2.0, grace_seconds=5)
    other = RunStore(launch_home)
    stored = json.loads(other.prepared_of("job-17") or "{}")
    assert stored["max_attempts"] == 2 and stored["agent"]["command"] == "true"
    policy = other.policy_of("job-17")
    assert policy.time_limit_s == 7200 and policy.grace_s == 5


def test_a_run_left_in_pulling_by_a_killed_launcher_can_still_be_finished(
    launch_home: Path, tmp_path: Path
) -> None:
    """SIGKILL (or a second Ctrl-C) during the final pull leaves the run PULLING; the process
    that finishes it later (gc, cancel, status --refresh) pulls again instead of failing."""
    target = ScriptedTarget([Phase.RUNNING, Phase.DONE], tmp=tmp_path)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-18")
    orch.store.transition("job-18", expected=RunStatus.PROVISIONING, new=RunStatus.PULLING)
    rec = RunStore(launch_home).get("job-18")
    assert rec.status is RunStatus.PULLING
    again = _orch(launch_home, target)  # another process
    done = again.finish("job-18", TargetStatus(phase=Phase.DONE, exit_code=0))
    assert done.status is RunStatus.SUCCEEDED
    assert again.store.resources(unreleased_only=True) == []


def test_an_attempt_a_killed_launcher_left_half_submitted_is_freed_at_the_end(
    launch_home: Path, tmp_path: Path
) -> None:
    """The launcher died inside the next attempt's submit: its resource is in the ledger but
    the stored handle is still the previous attempt's. Ending the run frees both."""
    target = ScriptedTarget([Phase.RUNNING] * 100, tmp=tmp_path, max_attempts=3)
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-19")
    store = RunStore(launch_home)
    store.begin_attempt("job-19", 2, "scripted")  # what the dead launcher had written
    store.record_intent(
        "job-19", target="scripted", kind="box", native_id="box-job-19-2", data={}, attempt=2
    )
    rec = _orch(launch_home, target).stop_and_finish("job-19", StopReason.LAUNCHER_LOST)
    assert rec.status is RunStatus.CANCELLED
    assert target.released == ["box-job-19-2"]
    assert store.resources(unreleased_only=True) == []
    assert all(a.ended_at is not None for a in store.attempts("job-19"))


def test_a_stop_asked_while_a_preempted_run_waits_for_its_next_machine_rents_none(
    launch_home: Path, tmp_path: Path
) -> None:
    target = ScriptedTarget([Phase.RUNNING, Phase.PREEMPTED], tmp=tmp_path, max_attempts=3)
    store = RunStore(launch_home)
    orch = Orchestrator(
        store,
        target,
        poll_s=0,
        clock=FakeClock(),
        sleep=lambda s: store.request_stop("job-20", StopReason.CANCEL) if s > 0.5 else None,
    )
    _start(orch, tmp_path, "job-20")
    rec = orch.supervise("job-20")
    assert rec.status is RunStatus.CANCELLED and "submit:2" not in target.calls
    assert store.resources(unreleased_only=True) == []


class NotingReporter(SilentReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def _agent_env_for(attempt: AttemptSpec, workspace: Path) -> dict[str, str]:
    """The job's environment in the workspace of `attempt`, built as the local target builds it
    (Vast pushes the same `resume_sources`; Kaggle and Colab pack them into an archive)."""
    if attempt.resume_from is not None:
        copy_resume_sources(attempt.resume_from, workspace, attempt.resume_skip)
    agent = agent_mod.Agent(
        str(workspace), agent_mod.Config({"run_id": "job-21", "command": "true"}, str(workspace))
    )
    try:
        return agent._environment()  # pyright: ignore[reportPrivateUsage]
    finally:
        agent.log.close()


@pytest.mark.parametrize("pulled", ["logs", "logs+outputs", "logs+unfinished-checkpoint"])
def test_an_attempt_ended_before_any_checkpoint_came_home_is_followed_by_a_fresh_one(
    launch_home: Path, tmp_path: Path, pulled: str
) -> None:
    """Issue 20, item 11: pre-empted at epoch 2 (a Vast outbid, a lost Kaggle kernel), before
    its first checkpoint. The next attempt must start afresh, not "resume" from the run
    folder's logs/ (`resuming from …/checkpoints/logs`, then `Is a directory`)."""
    target = ScriptedTarget(
        [Phase.RUNNING, Phase.PREEMPTED], [Phase.RUNNING, Phase.DONE], tmp=tmp_path, max_attempts=2
    )
    reporter = NotingReporter()
    orch = Orchestrator(
        RunStore(launch_home),
        target,
        reporter=reporter,
        poll_s=0,
        clock=FakeClock(),
        sleep=lambda _s: None,
    )
    _start(orch, tmp_path, "job-21")
    out = tmp_path / "job-21"  # what the attempt's pulls brought home
    (out / "logs").mkdir(parents=True)
    (out / agent_mod.LOG_FILE).write_text("2026-01-01T00:00:01.000Z out epoch 1\n")
    (out / agent_mod.STATUS_FILE).write_text('{"phase": "running"}')
    if "outputs" in pulled:
        (out / agent_mod.OUTPUTS).mkdir()
        (out / agent_mod.OUTPUTS / agent_mod.METRICS_FILE).write_text('{"epoch": 1}\n')
    if "unfinished-checkpoint" in pulled:  # its folder came, its only file was still written
        (out / agent_mod.CHECKPOINTS / "ckpt-2").mkdir(parents=True)
        (out / agent_mod.CHECKPOINTS / "ckpt-2" / "w.bin.tmp").write_text("half")
    rec = orch.supervise("job-21")
    assert rec.status is RunStatus.SUCCEEDED
    second = target.attempts[1]
    assert second.number == 2 and second.resume_from is None
    assert "LAUNCH_RESUME_FROM" not in _agent_env_for(second, tmp_path / "ws")
    assert any("starting attempt 2 of 2 from the start" in n for n in reporter.notes)


def test_resume_from_a_run_without_a_checkpoint_says_so_and_starts_nothing(
    launch_home: Path, tmp_path: Path
) -> None:
    """`launch run --resume-from RUN` where RUN kept no checkpoint: one clear error before
    anything is recorded or rented, rather than a job that fails on a folder it took for one
    or silently redoes work the user believes is saved."""
    parent = tmp_path / "parent" / agent_mod.CHECKPOINTS
    (parent / "ckpt-3").mkdir(parents=True)  # a subfolder, but no checkpoint file
    (parent / "logs").mkdir()  # what an earlier bad resume left (issue 20, item 11)
    (parent / "logs" / "job.attempt-1.log").write_text("2026-01-01T00:00:01.000Z out epoch 1\n")
    target = ScriptedTarget([Phase.DONE], tmp=tmp_path)
    orch = _orch(launch_home, target)
    with pytest.raises(NothingToResumeError) as caught:
        orch.start(
            _spec(),
            output_dir=tmp_path / "job-22",
            run_id="job-22",
            resume_checkpoints=parent,
            parent_id="job-p",
        )
    assert "\n" not in caught.value.message and "job-p" in caught.value.message
    assert target.calls == [] and orch.store.list_runs() == []


def test_the_log_goes_on_after_the_first_signal_instead_of_starting_again(
    launch_home: Path, tmp_path: Path
) -> None:
    """Ctrl-C while the job runs: the launcher stops the job and keeps streaming; once, it
    printed the whole log again from the first epoch."""

    class Lines(SilentReporter):
        def __init__(self) -> None:
            self.shown: list[str] = []

        def log(self, line: LogLine) -> None:
            self.shown.append(line.text)

    target = ScriptedTarget(
        [Phase.RUNNING, Phase.RUNNING, Interrupted(2), Phase.RUNNING, Phase.STOPPED], tmp=tmp_path
    )
    target.lines = [LogLine(at="t", stream="out", text=f"epoch {i}") for i in range(1, 4)]
    reporter = Lines()
    orch = Orchestrator(
        RunStore(launch_home), target, reporter, poll_s=0, clock=FakeClock(), sleep=lambda _s: None
    )
    _start(orch, tmp_path, "job-log")
    orch.supervise("job-log")
    assert reporter.shown == ["epoch 1", "epoch 2", "epoch 3"]


def test_a_refused_stop_is_asked_again_and_the_run_still_ends_cleanly(
    launch_home: Path, tmp_path: Path
) -> None:
    """A platform that refuses the stop once (Kaggle before the kernel said its session id):
    the run is not abandoned with its machine running; the stop is asked again."""
    target = ScriptedTarget(
        [Phase.RUNNING, Interrupted(2), Phase.RUNNING, Phase.RUNNING, Phase.STOPPED],
        tmp=tmp_path,
    )
    target.cancel_failures = 1
    orch = _orch(launch_home, target)
    _start(orch, tmp_path, "job-refused")
    rec = orch.supervise("job-refused")
    assert rec.status is RunStatus.CANCELLED, rec.message
    assert target.calls.count("cancel:m1") == 2
    assert target.calls[-1] == "cleanup:m1(keep_data=False)"
    assert orch.store.resources(unreleased_only=True) == []
