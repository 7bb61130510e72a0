"""The one interface every platform implements.

Contracts (after dstack's `Compute`):

1. No method waits on remote progress, except `logs(follow=True)`. The orchestrator owns waiting,
   retries and persistence.
2. `submit` returns everything needed to cancel or clean up, and every billed or long-lived thing
   it creates is written to the `Ledger` as INTENT *before* it is created (a container name, an
   instance label), so a launcher killed mid-call leaves a trail `launch gc` can follow.
3. `cancel` and `cleanup` on a resource that is already gone return silently.
4. Each target maps its native statuses through one `_NATIVE_STATUS` table; an unknown native
   status logs a warning and reads as the nearest safe phase, it never crashes.
5. Target-private data lives in `RunHandle.data` (JSON); the target re-reads it with its own
   model. Nothing is pickled.
6. Capabilities are a reasons dict (`unsupported`), not a class hierarchy.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from launcher.state import RunHandle
from launcher.sync import PullResult


class Feature(str, Enum):
    CUSTOM_IMAGE = "custom_image"  # runs the job's Docker image as-is
    STREAM_LOGS = "stream_logs"  # log lines arrive while the job runs
    CANCEL = "cancel"  # a running job can be asked to stop (and checkpoints first)
    GPU = "gpu"


class Phase(str, Enum):
    """What one `status()` probe saw. The orchestrator maps it onto RunStatus."""

    QUEUED = "queued"
    PROVISIONING = "provisioning"
    UPLOADING = "uploading"
    STARTING = "starting"
    RUNNING = "running"
    DONE = "done"  # the workload exited 0
    FAILED = "failed"  # the workload (or the platform) ended it with an error
    STOPPED = "stopped"  # ended because it was asked to stop (cancel, time limit)
    LOST = "lost"  # the remote side is gone or stopped answering


class TargetStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: Phase
    exit_code: int | None = None
    stop_reason: str | None = None  # the agent's: "signal" | "control" | "time_limit"
    message: str = ""
    heartbeat_at: datetime | None = None
    last_checkpoint: str | None = None
    last_metrics: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED, Phase.STOPPED, Phase.LOST)


class CheckResult(BaseModel):
    ok: bool
    problems: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)
    details: dict[str, str] = Field(default_factory=dict)


class Prepared(BaseModel):
    """The output of `prepare`: everything `submit` needs, all of it local."""

    run_id: str
    bundle_path: Path
    bundle_digest: str
    image: str | None = None  # a built image tag, for targets that run images
    secrets: list[str] = Field(default_factory=list)  # NAMES; values are read at submit
    resume_checkpoints: Path | None = None  # local folder whose checkpoints the job starts from
    data: dict[str, Any] = Field(default_factory=dict)


class PlanOption(BaseModel):
    """One way the job could run on a target: a Vast offer, a Kaggle machine shape, this host."""

    name: str  # what the user would recognise: an offer id, a machine shape, "this machine"
    gpu: str = ""  # e.g. "RTX 4090", "T4" ("" = CPU only)
    gpu_count: int = 0
    gpu_ram_gb: float | None = None
    price_per_hour: float | None = None  # USD; 0 for free platforms, None when unknown
    estimated_cost_usd: float | None = None  # price x the job's time limit, when both are known
    details: dict[str, str] = Field(default_factory=dict)  # short extra columns (reliability...)


class Plan(BaseModel):
    """What `launch plan` shows: where the job would run and what stands in the way.

    `options` are best first (the one `launch run` would take first). `problems` are reasons the
    run would be refused as the spec stands (no offer fits, quota too small without chaining);
    `notes` are facts worth knowing (session cap, quota left, chaining planned).
    """

    target: str
    options: list[PlanOption] = Field(default_factory=list[PlanOption])
    notes: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return not self.problems and bool(self.options)


class LogLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str  # the agent's UTC timestamp, as written
    stream: str  # "out" | "err" | "agent"
    text: str


class Ledger(Protocol):
    """Where a target writes down what it is about to create, and what it released."""

    def intent(self, kind: str, native_id: str, data: Mapping[str, Any] | None = None) -> int:
        """Record a resource before creating it; returns a ticket for `created`/`released`."""
        ...

    def created(self, ticket: int, native_id: str | None = None) -> None: ...


class Target(ABC):
    """A platform the launcher can run a job on. See the module docstring for the contracts."""

    name: ClassVar[str]
    unsupported: ClassVar[Mapping[Feature, str]] = {}
    # the ledger kind `release_resource` gets for what `labelled()` lists (`launch gc`)
    stray_kind: ClassVar[str] = "container"

    @classmethod
    @abstractmethod
    def check(cls) -> CheckResult:
        """Are dependencies and credentials present? Spends nothing, creates nothing."""

    @abstractmethod
    def prepare(self, spec: Any, run_id: str, workdir: Path) -> Prepared:
        """Local work only: build the image, make the bundle. May be slow; never bills."""

    @abstractmethod
    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        """Start the remote work and return at once. Write resources to `ledger` first."""

    @abstractmethod
    def status(self, handle: RunHandle) -> TargetStatus:
        """One non-blocking probe of where the run is."""

    @abstractmethod
    def read_logs(self, handle: RunHandle, cursor: int) -> tuple[list[LogLine], int]:
        """Log lines after `cursor` (an opaque position; 0 = start) and the new cursor.

        Never returns a line twice for increasing cursors, never skips one.
        """

    @abstractmethod
    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        """Bring outputs, checkpoints and logs home: incremental, verified, atomic, repeatable."""

    @abstractmethod
    def cancel(self, handle: RunHandle) -> None:
        """Ask the job to stop; it gets its grace period to checkpoint. Idempotent."""

    @abstractmethod
    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        """Free everything billed or held for this run. Idempotent; silent when already gone.

        With `keep_data`, keep whatever holds outputs that were not pulled yet (the run folder
        of the local target), so a later `launch pull` can still fetch them. The orchestrator
        marks the run's ledger entries released when this returns without raising.
        """

    def advance(self, handle: RunHandle, ledger: Ledger) -> RunHandle | None:
        """Do the next short step towards a running job, if one is due; called before each probe.

        Remote targets use it for what follows provisioning (upload the bundle once the machine
        answers, then start the agent): each call does at most one bounded step and returns the
        updated handle to store, or None when nothing changed. Local targets need nothing here.
        """
        return None

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        """Free one ledger entry that has no handle (the launcher died inside `submit`).

        Silent when the resource is already gone.
        """
        raise NotImplementedError(f"{self.name} cannot release a bare {kind}")

    def labelled(self) -> list[tuple[str, str, str]]:
        """Resources on the platform that carry our run label: (native id, run id, state).

        `launch gc` compares them with the store, to find what no record knows about.
        """
        return []

    def plan(self, spec: Any) -> Plan:
        """Where this job would run and at what price, without creating or spending anything.

        May call the platform's read-only APIs (offer search, quota). Raises only for missing
        credentials or an unreachable platform; a job that cannot run here is a `Plan` with
        `problems`, not an exception.
        """
        return Plan(target=self.name, notes=[f"{self.name} has no planner yet"])

    def usage(self, handle: RunHandle) -> dict[str, float]:
        """What the platform counted for this run besides money, read after cleanup, e.g.
        {"kaggle_gpu_quota_hours": 1.5}. Stored with the run; {} when there is nothing."""
        return {}

    def kill(self, handle: RunHandle) -> None:
        """Stop at once, without the grace period. Used when the user abandons a cancel."""
        self.cancel(handle)

    # ---- derived from the core above --------------------------------------------------------

    def logs(
        self, handle: RunHandle, *, follow: bool = False, poll_s: float = 0.5
    ) -> Iterator[LogLine]:
        """All log lines; with `follow`, keep yielding until the run has finished."""
        cursor = 0
        while True:
            lines, cursor = self.read_logs(handle, cursor)
            yield from lines
            if not follow:
                return
            if not lines and self.status(handle).finished:
                lines, cursor = self.read_logs(handle, cursor)
                yield from lines
                return
            if not lines:
                time.sleep(poll_s)
