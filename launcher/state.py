"""Run states, the transitions between them, and the records the store keeps.

A run moves through the phases of DESIGN.md. Each status change is a compare-and-set in the store
(`RunStore.transition`) checked against `ALLOWED_TRANSITIONS`, and leaves a timestamped
`StatusEvent`: phase durations in reports are the gaps between consecutive events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(str, Enum):
    """Where a run is. `PREEMPTED` is not terminal: the run may resume."""

    PENDING = "pending"
    PREPARING = "preparing"  # local work: image build, bundle
    PROVISIONING = "provisioning"  # asking the platform for a machine / slot
    UPLOADING = "uploading"  # bundle and inputs on their way
    STARTING = "starting"  # agent launched, workload not yet confirmed running
    RUNNING = "running"
    PULLING = "pulling"  # final pull of outputs
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"

    def is_terminal(self) -> bool:
        """True when nothing more will happen to this run."""
        return self in _TERMINAL

    def is_failed(self) -> bool:
        """True for outcomes a script should treat as failure."""
        return self is RunStatus.FAILED


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
_ENDINGS = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
_ORDER = (
    RunStatus.PENDING,
    RunStatus.PREPARING,
    RunStatus.PROVISIONING,
    RunStatus.UPLOADING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.PULLING,
    RunStatus.SUCCEEDED,
)
# an attempt can end early from any phase in which the platform holds something for it
_MAY_BE_PREEMPTED = frozenset(_ORDER[2:7])


def _allowed(status: RunStatus) -> frozenset[RunStatus]:
    if status in _TERMINAL:
        return frozenset()
    if status is RunStatus.PREEMPTED:  # the next attempt, or the end of the run
        return frozenset({RunStatus.PROVISIONING, RunStatus.PULLING}) | _ENDINGS
    later = frozenset(_ORDER[_ORDER.index(status) + 1 :])
    if status is RunStatus.PENDING:
        later = frozenset({RunStatus.PREPARING})
    preempt = {RunStatus.PREEMPTED} if status in _MAY_BE_PREEMPTED else set[RunStatus]()
    return later | preempt | _ENDINGS


# Phases may be skipped forwards (a local run has no upload; a stop before the job started goes
# straight to PULLING) but never go backwards, except PREEMPTED -> PROVISIONING: the next
# attempt. In-run syncs do not change the status.
ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {s: _allowed(s) for s in RunStatus}


class FailureReason(str, Enum):
    """Why a run ended FAILED (or CANCELLED). Kept separate from the status (dstack style)."""

    PREPARE_FAILED = "prepare_failed"
    SUBMIT_FAILED = "submit_failed"
    NO_CAPACITY = "no_capacity"
    WORKLOAD_EXITED_NONZERO = "workload_exited_nonzero"
    INPUT_FAILED = "input_failed"  # an input could not be fetched; the job never started
    TIMED_OUT = "timed_out"
    REMOTE_LOST = "remote_lost"
    LAUNCHER_LOST = "launcher_lost"  # the supervising launcher died; found by `launch gc`
    USER_CANCELLED = "user_cancelled"
    PULL_FAILED = "pull_failed"
    COST_LIMIT = "cost_limit"  # stopped (with a checkpoint) before it cost more than max_cost_usd
    PREEMPTED = "preempted"  # the platform ended its attempts and no more were allowed


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Stored(BaseModel):
    """Read lenient: records written by a newer launcher still load."""

    model_config = ConfigDict(extra="ignore")


class RunHandle(_Stored):
    """The stored handle of a run's current attempt: everything needed to find, stop and free
    it. `data` is the target's own handle model as JSON (each target re-reads it with that
    model, `Target.load_handle`). Never pickled."""

    target: str
    run_id: str
    attempt: int = 1
    data: dict[str, Any] = Field(default_factory=dict[str, Any])


class StopReason(str, Enum):
    """Why a stop was asked for. Stored with the run, so the launcher that drives it hears of a
    stop asked by any process (`launch cancel` in another terminal, `launch gc`)."""

    CANCEL = "cancel"  # `launch cancel`
    INTERRUPT = "interrupt"  # Ctrl-C, SIGTERM or SIGHUP to the launcher
    COST_LIMIT = "cost_limit"  # limits.max_cost_usd would be passed
    TIME_LIMIT = "time_limit"  # limits.max_hours passed and the agent did not stop the job
    LAUNCHER_LOST = "launcher_lost"  # `launch gc`: the launcher that drove it died


class AttemptEnd(str, Enum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the workload exited non-zero
    STOPPED = "stopped"  # asked to stop (cancel, cost or time limit)
    PREEMPTED = "preempted"  # the platform ended it: outbid, a session cap
    LOST = "lost"  # the machine or the agent vanished
    SUBMIT_FAILED = "submit_failed"  # it never started


class AttemptRecord(_Stored):
    """One attempt of a run: where it ran, for how long, why it ended, what it cost."""

    number: int
    target: str
    where: str = ""  # the machine as a user would name it: "instance 42 (RTX 4090)", a kernel
    started_at: datetime
    ended_at: datetime | None = None
    end: AttemptEnd | None = None
    message: str = ""
    ran_s: float = 0.0  # seconds the job was seen RUNNING
    price_per_hour: Decimal | None = None
    # what the platform counted besides money, e.g. {"kaggle_quota_hours": 1.5}
    usage: dict[str, float] = Field(default_factory=dict[str, float])

    def cost(self, now: datetime | None = None) -> Decimal | None:
        """$/h times the time the attempt held its machine (until now while it runs)."""
        if self.price_per_hour is None:
            return None
        end = self.ended_at or now or utcnow()
        held = max(0.0, (end - self.started_at).total_seconds())
        return (self.price_per_hour * Decimal(held) / 3600).quantize(Decimal("0.000001"))


class RunPolicy(_Stored):
    """How the orchestrator supervises a run, taken from the spec once at start."""

    sync_every_s: float = 300.0
    time_limit_s: float | None = None  # the job's RUNNING time over all attempts
    grace_s: float = 30.0
    max_cost_usd: Decimal | None = None
    max_attempts: int | None = None  # limits.max_attempts; None: the target's default
    attempt_backoff_s: float = 2.0  # before the second attempt; doubled for each one after


class StatusEvent(_Stored):
    status: RunStatus
    at: datetime
    message: str = ""


class ResourceState(str, Enum):
    """A billed or long-lived thing the launcher creates. INTENT is written before creation."""

    INTENT = "intent"
    CREATED = "created"
    # held on purpose: what a failed final pull left on it has not come home yet. `launch
    # pull` turns it back to CREATED once it has; `launch gc` frees it only then
    KEPT = "kept"
    RELEASED = "released"


class ResourceRecord(_Stored):
    id: int
    run_id: str
    attempt: int = 1
    target: str
    kind: str  # "container", "process", "instance", "kernel", ...
    native_id: str  # the name/id on the platform; chosen before creation where possible
    state: ResourceState
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    released_at: datetime | None = None


class RunRecord(_Stored):
    """One run as the store knows it."""

    schema_version: int = 1
    id: str
    job: str
    target: str
    spec_digest: str
    spec_path: str = ""
    status: RunStatus
    failure_reason: FailureReason | None = None
    message: str = ""
    handle: RunHandle | None = None
    output_dir: str = ""
    parent_id: str | None = None  # the run this one resumed from
    supervisor_pid: int | None = None  # the launcher process that drives this run
    supervisor_host: str = ""
    supervisor_start: str = ""  # its start time (/proc starttime): tells it from a reused pid
    price_per_hour: Decimal | None = None  # the current (or last) attempt's
    cost_usd: Decimal | None = None  # over every attempt; set when the run ends
    # what the platform counts besides money, e.g. {"kaggle_gpu_quota_hours": 1.5}
    usage: dict[str, float] = Field(default_factory=dict[str, float])
    exit_code: int | None = None
    stop_reason: StopReason | None = None  # a stop was asked for (see StopReason)
    created_at: datetime
    updated_at: datetime
    events: list[StatusEvent] = Field(default_factory=list[StatusEvent])
    attempts: list[AttemptRecord] = Field(default_factory=list[AttemptRecord])

    @property
    def attempt(self) -> int:
        """The number of the current (or last) attempt; 0 before the first."""
        return self.attempts[-1].number if self.attempts else 0

    def phase_durations(self, now: datetime | None = None) -> list[tuple[RunStatus, float]]:
        """Seconds spent in each status, in order; the last one runs to `now` unless terminal."""
        out: list[tuple[RunStatus, float]] = []
        for cur, nxt in zip(self.events, self.events[1:], strict=False):
            out.append((cur.status, (nxt.at - cur.at).total_seconds()))
        if self.events and not self.events[-1].status.is_terminal():
            last = self.events[-1]
            out.append((last.status, ((now or utcnow()) - last.at).total_seconds()))
        return out
