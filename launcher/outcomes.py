"""Pure rules the orchestrator applies: a run's policy from its spec, how an ended attempt ends
the run, and what the run cost and used over its attempts."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from launcher.agent import EXIT_NO_INPUT
from launcher.errors import RemoteRunLostError
from launcher.state import (
    AttemptEnd,
    FailureReason,
    RunPolicy,
    RunRecord,
    RunStatus,
    StopReason,
)
from launcher.targets.base import Phase, TargetStatus

if TYPE_CHECKING:
    from launcher.spec import JobSpec

_STOPPED_AS: dict[StopReason, tuple[RunStatus, FailureReason, str]] = {
    StopReason.CANCEL: (RunStatus.CANCELLED, FailureReason.USER_CANCELLED, ""),
    StopReason.INTERRUPT: (RunStatus.CANCELLED, FailureReason.USER_CANCELLED, ""),
    StopReason.LAUNCHER_LOST: (RunStatus.CANCELLED, FailureReason.LAUNCHER_LOST, ""),
    StopReason.COST_LIMIT: (
        RunStatus.FAILED,
        FailureReason.COST_LIMIT,
        "stopped before it cost more than limits.max_cost_usd",
    ),
    StopReason.TIME_LIMIT: (
        RunStatus.FAILED,
        FailureReason.TIMED_OUT,
        "stopped: it outlived limits.max_hours",
    ),
}

_ATTEMPT_END: dict[Phase, AttemptEnd] = {
    Phase.DONE: AttemptEnd.SUCCEEDED,
    Phase.FAILED: AttemptEnd.FAILED,
    Phase.STOPPED: AttemptEnd.STOPPED,
    Phase.PREEMPTED: AttemptEnd.PREEMPTED,
    Phase.LOST: AttemptEnd.LOST,
}


def run_policy(spec: JobSpec) -> RunPolicy:
    """How a run of `spec` is supervised (stored with the run, read by any process)."""
    lim = spec.limits
    return RunPolicy(
        sync_every_s=spec.outputs.sync_every,
        time_limit_s=lim.max_hours * 3600 if lim.max_hours else None,
        grace_s=lim.grace_seconds,
        max_cost_usd=Decimal(str(lim.max_cost_usd)) if lim.max_cost_usd is not None else None,
        max_attempts=lim.max_attempts,
    )


def attempt_end(st: TargetStatus) -> AttemptEnd:
    return _ATTEMPT_END.get(st.phase, AttemptEnd.LOST)


def outcome(
    st: TargetStatus, record: RunRecord, why_not: str | None = None
) -> tuple[RunStatus, FailureReason | None, str]:
    """How the run ends, given how its last attempt ended (`st`), whether a stop was asked for
    (`record.stop_reason`) and, for an attempt that ended early, why no other one followed."""
    if st.phase is Phase.DONE:
        return RunStatus.SUCCEEDED, None, ""
    if st.phase is Phase.FAILED:  # it failed on its own, whatever was asked meanwhile
        if st.exit_code == EXIT_NO_INPUT and st.message.startswith("input '"):  # not the job's 66
            return RunStatus.FAILED, FailureReason.INPUT_FAILED, st.message
        return RunStatus.FAILED, FailureReason.WORKLOAD_EXITED_NONZERO, st.message
    if record.stop_reason is not None:
        status, reason, message = _STOPPED_AS[record.stop_reason]
        return status, reason, message or st.message
    tail = f"; {why_not}" if why_not else ""
    resume = (
        f"; `launch run {record.spec_path} --resume-from {record.id}` continues from its "
        "newest checkpoint"
    )
    match st.phase:
        case Phase.STOPPED if st.stop_reason == "time_limit":
            return RunStatus.FAILED, FailureReason.TIMED_OUT, st.message + resume
        case Phase.STOPPED:  # someone stopped the job itself (docker stop, a signal to it)
            return RunStatus.CANCELLED, FailureReason.USER_CANCELLED, st.message
        case Phase.PREEMPTED if st.stop_reason == "session_cap":
            return RunStatus.FAILED, FailureReason.TIMED_OUT, st.message + tail + resume
        case Phase.PREEMPTED:
            return RunStatus.FAILED, FailureReason.PREEMPTED, st.message + tail + resume
        case _:
            lost = str(RemoteRunLostError(st.message or "the job vanished"))
            return RunStatus.FAILED, FailureReason.REMOTE_LOST, lost + tail + resume


def run_cost(record: RunRecord) -> Decimal | None:
    """What the run's attempts cost: each one's $/h times the time it held its machine (until
    now for one still running). None when no attempt knows its price."""
    costs = [c for a in record.attempts if (c := a.cost()) is not None]
    return sum(costs, Decimal(0)) if costs else None


def run_usage(record: RunRecord) -> dict[str, float]:
    """What the platform counted over every attempt, summed per kind."""
    total: dict[str, float] = {}
    for a in record.attempts:
        for kind, amount in a.usage.items():
            total[kind] = round(total.get(kind, 0.0) + amount, 6)
    return total
