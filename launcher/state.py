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
_ACTIVE = frozenset(
    {
        RunStatus.PREPARING,
        RunStatus.PROVISIONING,
        RunStatus.UPLOADING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.PULLING,
    }
)
_ENDINGS = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


def _after(*later: RunStatus) -> frozenset[RunStatus]:
    return frozenset(later) | _ENDINGS


# Phases may be skipped forwards (a local run has no upload) but never go backwards, except
# PREEMPTED -> PROVISIONING (resume) and RUNNING -> PULLING -> RUNNING is not allowed: the
# in-run syncs do not change the status.
ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: _after(RunStatus.PREPARING),
    RunStatus.PREPARING: _after(
        RunStatus.PROVISIONING, RunStatus.UPLOADING, RunStatus.STARTING, RunStatus.RUNNING
    ),
    RunStatus.PROVISIONING: _after(
        RunStatus.UPLOADING, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.PREEMPTED
    ),
    RunStatus.UPLOADING: _after(RunStatus.STARTING, RunStatus.RUNNING, RunStatus.PREEMPTED),
    RunStatus.STARTING: _after(
        RunStatus.RUNNING, RunStatus.PULLING, RunStatus.PREEMPTED, RunStatus.SUCCEEDED
    ),
    RunStatus.RUNNING: _after(RunStatus.PULLING, RunStatus.PREEMPTED, RunStatus.SUCCEEDED),
    RunStatus.PULLING: _after(RunStatus.SUCCEEDED, RunStatus.PREEMPTED),
    RunStatus.PREEMPTED: _after(RunStatus.PROVISIONING, RunStatus.PULLING),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

ACTIVE_STATUSES = _ACTIVE


class FailureReason(str, Enum):
    """Why a run ended FAILED (or CANCELLED). Kept separate from the status (dstack style)."""

    PREPARE_FAILED = "prepare_failed"
    SUBMIT_FAILED = "submit_failed"
    NO_CAPACITY = "no_capacity"
    WORKLOAD_EXITED_NONZERO = "workload_exited_nonzero"
    TIMED_OUT = "timed_out"
    REMOTE_LOST = "remote_lost"
    LAUNCHER_LOST = "launcher_lost"  # the supervising launcher died; found by `launch gc`
    USER_CANCELLED = "user_cancelled"
    PULL_FAILED = "pull_failed"
    COST_LIMIT = "cost_limit"  # stopped (with a checkpoint) before it cost more than max_cost_usd


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Stored(BaseModel):
    """Read lenient: records written by a newer launcher still load."""

    model_config = ConfigDict(extra="ignore")


class RunHandle(_Stored):
    """Everything needed to find, cancel and clean up a submitted run.

    `data` is target-private JSON; each target re-reads it with its own model. Never pickled.
    """

    target: str
    run_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    # what the machine behind this handle costs; a new machine (a pre-emption move) brings its own
    price_per_hour: Decimal | None = None
    # Per-attempt cost, for targets that move a run between machines: what the machines before
    # this one cost, and when this one began to bill. Without `billed_since`, the run is billed
    # at `price_per_hour` from submit on.
    spent_usd: Decimal = Decimal(0)
    billed_since: datetime | None = None

    def cost_now(self, price_per_hour: Decimal) -> Decimal:
        """What the run's machines cost until now: the earlier ones, plus this one's time."""
        held_s = (utcnow() - self.billed_since).total_seconds() if self.billed_since else 0.0
        cost = self.spent_usd + price_per_hour * Decimal(max(0.0, held_s)) / 3600
        return cost.quantize(Decimal("0.000001"))


class StatusEvent(_Stored):
    status: RunStatus
    at: datetime
    message: str = ""


class ResourceState(str, Enum):
    """A billed or long-lived thing the launcher creates. INTENT is written before creation."""

    INTENT = "intent"
    CREATED = "created"
    RELEASED = "released"


class ResourceRecord(_Stored):
    id: int
    run_id: str
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
    price_per_hour: Decimal | None = None
    cost_usd: Decimal | None = None
    # what the platform counts besides money, e.g. {"kaggle_gpu_quota_hours": 1.5}
    usage: dict[str, float] = Field(default_factory=dict[str, float])
    exit_code: int | None = None
    created_at: datetime
    updated_at: datetime
    events: list[StatusEvent] = Field(default_factory=list[StatusEvent])

    def phase_durations(self, now: datetime | None = None) -> list[tuple[RunStatus, float]]:
        """Seconds spent in each status, in order; the last one runs to `now` unless terminal."""
        out: list[tuple[RunStatus, float]] = []
        for cur, nxt in zip(self.events, self.events[1:], strict=False):
            out.append((cur.status, (nxt.at - cur.at).total_seconds()))
        if self.events and not self.events[-1].status.is_terminal():
            last = self.events[-1]
            out.append((last.status, ((now or utcnow()) - last.at).total_seconds()))
        return out
