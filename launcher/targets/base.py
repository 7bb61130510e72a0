"""The one interface every platform implements.

Contracts (after dstack's `Compute`):

1. No method waits on remote progress, except `logs(follow=True)`. The orchestrator owns waiting,
   retries, attempts and persistence.
2. `submit` starts one attempt and returns its handle at once. Every billed or long-lived thing
   it creates is written to the `Ledger` as INTENT *before* it is created (a container name, an
   instance label), so a launcher killed mid-call leaves a trail `launch gc` can follow.
3. `cancel` and `cleanup` on a resource that is already gone return silently.
4. Each target maps its native statuses through one `_NATIVE_STATUS` table; an unknown native
   status logs a warning and reads as the nearest safe phase, it never crashes.
5. Targets keep no per-run state in memory. What `prepare` made is a `Prepared` model and what
   `submit` started is a `Handle` model, both the target's own subclasses, stored as JSON by the
   orchestrator and handed back on every call: a second process (`launch cancel`, `launch gc`, a
   restarted launcher) sees the same run. A target may cache connections and short-lived reads
   of remote state, nothing a fresh process would need to be correct.
6. An attempt can end before the job did: the platform took the machine (outbid, a session
   cap) or it vanished. `status` then says PREEMPTED or LOST, and the orchestrator, not the
   target, pulls, frees the attempt and submits the next one from the newest pulled checkpoint
   (`AttemptSpec.resume_from`), up to `Prepared.max_attempts`.
7. Capabilities are a reasons dict (`unsupported`, shown by `launch plan`), not a class
   hierarchy.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from launcher.inputs import FetchItem, InputWays
from launcher.progress import Meter, MeterFactory, PlainMeter
from launcher.state import RunHandle
from launcher.sync import PullResult

if TYPE_CHECKING:
    from launcher.spec import JobSpec


class Feature(str, Enum):
    """What a target may not do as the others do; `Target.unsupported` says why, and
    `launch plan` shows it."""

    CUSTOM_IMAGE = "custom_image"  # runs the job's Docker image as-is


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
    PREEMPTED = "preempted"  # the platform ended this attempt; the job can go on in another
    LOST = "lost"  # the remote side is gone or stopped answering


NOT_STARTED = frozenset({Phase.QUEUED, Phase.PROVISIONING, Phase.UPLOADING})


class TargetStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: Phase
    exit_code: int | None = None
    # STOPPED: the agent's "signal" | "control" | "time_limit";
    # PREEMPTED: the platform's "outbid" | "session_cap" | "quota" | "machine_lost"
    stop_reason: str | None = None
    message: str = ""
    heartbeat_at: datetime | None = None
    last_checkpoint: str | None = None
    last_metrics: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """The attempt has ended (its job done, stopped, failed, or taken away)."""
        return self.phase in (Phase.DONE, Phase.FAILED, Phase.STOPPED, Phase.PREEMPTED, Phase.LOST)


class CheckResult(BaseModel):
    ok: bool
    problems: list[str] = Field(default_factory=list[str])
    hints: list[str] = Field(default_factory=list[str])
    details: dict[str, str] = Field(default_factory=dict[str, str])


class AgentConfig(BaseModel):
    """The job's part of the agent's agent.json (see launcher/agent.py `Config`); each target
    adds where the run's inputs are and which attempt this is when it starts the agent."""

    model_config = ConfigDict(extra="ignore")

    command: str
    workdir: str = "workload"
    env: dict[str, str] = Field(default_factory=dict[str, str])
    # the image's ENV, for targets that do not start the job with `docker run` (launcher/
    # image_config.py); the agent puts `env` over it
    image_env: dict[str, str] = Field(default_factory=dict[str, str])
    time_limit_s: float | None = None
    # stop early enough that a platform's cap ends in a checkpoint, not a kill
    stop_margin_s: float = 60.0
    grace_s: float = 30.0
    heartbeat_s: float = 2.0
    # inputs the machine downloads itself (launch_fetch items, launcher/inputs.py FETCH_THERE)
    fetch: list[FetchItem] = Field(default_factory=list[FetchItem])
    # credentials passed for `fetch` alone: the agent keeps them from the workload's environment
    fetch_only_env: list[str] = Field(default_factory=list[str])

    def for_attempt(
        self, run_id: str, attempt: AttemptSpec, input_dir: str, **more: object
    ) -> dict[str, Any]:
        """agent.json for one attempt: its number, and the job time it has left."""
        data = self.model_dump()
        data["fetch"] = [item.as_json() for item in self.fetch]  # as launch_fetch reads them
        if attempt.time_left_s is not None:
            data["time_limit_s"] = max(1.0, attempt.time_left_s)
        return dict(data, run_id=run_id, attempt=attempt.number, input_dir=input_dir, **more)


class Prepared(BaseModel):
    """The output of `prepare`: everything `submit` needs for any attempt, all of it local.
    Each target subclasses it with its own fields; stored with the run as JSON."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    bundle_path: Path
    bundle_digest: str
    agent: AgentConfig
    secrets: list[str] = Field(default_factory=list[str])  # NAMES; values are read at submit
    max_attempts: int = 1  # the target's default; limits.max_attempts overrides it
    more_attempts_hint: str = ""  # what to change when a run needs more attempts than this


class AttemptSpec(BaseModel):
    """Which attempt `submit` starts, and what it starts from."""

    model_config = ConfigDict(frozen=True)

    number: int = 1
    # a pulled run folder (checkpoints/, outputs/) or a bare checkpoints folder to start from
    resume_from: Path | None = None
    resume_skip: list[str] = Field(default_factory=list[str])  # checkpoints not to resume from
    time_left_s: float | None = None  # of the job's limits.max_hours, over every attempt


class Handle(BaseModel):
    """What `submit` returns: everything needed to find, stop and free one attempt. Targets
    subclass it. Written strict, read lenient (a newer launcher may add fields)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    attempt: int = 1
    price_per_hour: Decimal | None = None  # this attempt's machine; 0 when free, None unknown


class PlanOption(BaseModel):
    """One way the job could run on a target: a Vast offer, a Kaggle machine shape, this host."""

    name: str  # what the user would recognise: an offer id, a machine shape, "this machine"
    gpu: str = ""  # e.g. "RTX 4090", "T4" ("" = CPU only)
    gpu_count: int = 0
    gpu_ram_gb: float | None = None
    price_per_hour: float | None = None  # USD; 0 for free platforms, None when unknown
    estimated_cost_usd: float | None = None  # price x the job's time limit, when both are known
    details: dict[str, str] = Field(default_factory=dict[str, str])  # short extra columns


class Plan(BaseModel):
    """What `launch plan` shows: where the job would run and what stands in the way.

    `options` are best first (the one `launch run` would take first). `problems` are reasons the
    run would be refused as the spec stands (no offer fits, quota too small without chaining);
    `notes` are facts worth knowing (session cap, quota left, chaining planned).
    """

    target: str
    options: list[PlanOption] = Field(default_factory=list[PlanOption])
    notes: list[str] = Field(default_factory=list[str])
    problems: list[str] = Field(default_factory=list[str])

    @property
    def runnable(self) -> bool:
        return not self.problems and bool(self.options)


class LogLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str  # the agent's UTC timestamp, as written
    stream: str  # "out" | "err" | "agent"
    text: str


class Foreign(BaseModel):
    """A resource with a launch label that this store did not make (`Target.not_ours`)."""

    model_config = ConfigDict(frozen=True)

    native_id: str
    run_id: str
    state: str
    label: str  # as the platform shows it
    owner: str  # the key of the store that made it; "" when the label names no store (older)


class Ledger(Protocol):
    """Where a target writes down what it is about to create, and what it released."""

    def intent(self, kind: str, native_id: str, data: Mapping[str, Any] | None = None) -> int:
        """Record a resource before creating it; returns a ticket for `created`."""
        ...

    def created(self, ticket: int, native_id: str | None = None) -> None: ...


Notify = Callable[[str], None]
P = TypeVar("P", bound=Prepared)
H = TypeVar("H", bound=Handle)


def _quiet(_message: str) -> None:
    return None


class Target(ABC, Generic[P, H]):
    """A platform the launcher can run a job on. See the module docstring for the contracts."""

    name: ClassVar[str]
    prepared_model: ClassVar[type[Prepared]]
    handle_model: ClassVar[type[Handle]]
    unsupported: ClassVar[Mapping[Feature, str]] = {}
    # how this target delivers each kind of job input, best first (launcher/inputs.py)
    input_ways: ClassVar[InputWays] = InputWays()
    # the ledger kind `release_resource` gets for what `labelled()` lists (`launch gc`)
    stray_kind: ClassVar[str] = "container"
    # True where what a pull did not bring home lives only on the billed machine (a Vast
    # instance's disk): `cleanup(keep_data=True)` cannot keep it, so a final pull that fails
    # keeps the machine instead, for `launch pull` (then `launch gc`) to finish
    data_dies_with_machine: ClassVar[bool] = False

    def __init__(
        self, home: Path, notify: Notify = _quiet, meter: MeterFactory | None = None
    ) -> None:
        self.home = home  # $LAUNCH_HOME: keys, bundles, caches live under it
        self.notify = notify  # one line of progress for the user
        self._meter = meter

    def meter(self, what: str) -> Meter:
        """Byte progress for one long transfer (launcher/progress.py): the watcher's, else
        quiet plain lines through `notify`."""
        if self._meter is not None:
            return self._meter(what)
        return PlainMeter(what, self.notify)

    # ---- the stored models ------------------------------------------------------------------

    def load_prepared(self, data: str) -> P:
        return cast(P, self.prepared_model.model_validate_json(data))

    def load_handle(self, stored: RunHandle) -> H:
        return cast(H, self.handle_model.model_validate(stored.data))

    def store_handle(self, handle: H) -> RunHandle:
        return RunHandle(
            target=self.name,
            run_id=handle.run_id,
            attempt=handle.attempt,
            data=handle.model_dump(mode="json"),
        )

    # ---- the core every target implements ---------------------------------------------------

    @classmethod
    @abstractmethod
    def check(cls) -> CheckResult:
        """Are dependencies and credentials present? Spends nothing, creates nothing."""

    @abstractmethod
    def prepare(self, spec: JobSpec, run_id: str, workdir: Path) -> P:
        """Local work only: build the image, make the bundle. May be slow; never bills."""

    @abstractmethod
    def submit(self, prepared: P, ledger: Ledger, attempt: AttemptSpec, previous: H | None) -> H:
        """Start one attempt and return at once. Write resources to `ledger` first.

        `previous` is the handle of the attempt before this one (None for the first), for what
        a target carries over (the offers already tried).
        """

    @abstractmethod
    def status(self, handle: H) -> TargetStatus:
        """One non-blocking probe of where the attempt is."""

    @abstractmethod
    def read_logs(self, handle: H, cursor: int) -> tuple[list[LogLine], int]:
        """Log lines after `cursor` (an opaque position; 0 = the attempt's start) and the new
        cursor. Never returns a line twice for increasing cursors, never skips one.
        """

    @abstractmethod
    def pull(self, handle: H, dest: Path) -> PullResult:
        """Bring outputs, checkpoints and logs home: incremental, verified, atomic, repeatable.
        Nothing to pull (the machine is gone) is an empty result, not an error."""

    @abstractmethod
    def cancel(self, handle: H) -> None:
        """Ask the job to stop; it gets its grace period to checkpoint. Idempotent."""

    @abstractmethod
    def cleanup(self, handle: H, *, keep_data: bool = False) -> None:
        """Free everything billed or held for this attempt. Idempotent; silent when gone.

        With `keep_data`, keep whatever holds outputs that were not pulled yet (the run folder
        of the local target), so a later `launch pull` can still fetch them. The orchestrator
        marks the attempt's ledger entries released when this returns without raising.
        """

    # ---- optional, with defaults ------------------------------------------------------------

    def advance(self, prepared: P, handle: H, ledger: Ledger) -> H | None:
        """Do the next short step towards a running job, if one is due; called before each probe.

        Remote targets use it for what follows provisioning (upload the bundle once the machine
        answers, then start the agent): each call does at most one bounded step and returns the
        updated handle to store, or None when nothing changed. Local targets need nothing here.
        """
        return None

    def describe(self, handle: H) -> str:
        """The attempt's machine as a user would name it ("instance 42 (RTX 4090)")."""
        return ""

    def kill(self, handle: H) -> None:
        """Stop at once, without the grace period. Used when a stop was not obeyed."""
        self.cancel(handle)

    def usage(self, handle: H) -> dict[str, float]:
        """What the platform counted for this attempt besides money, read after cleanup, e.g.
        {"kaggle_quota_hours": 1.5}. {} when there is nothing."""
        return {}

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        """Free one ledger entry that has no handle (the launcher died inside `submit`).

        Silent when the resource is already gone.
        """
        raise NotImplementedError(f"{self.name} cannot release a bare {kind}")

    def labelled(self) -> list[tuple[str, str, str]]:
        """Resources on the platform that carry our run label: (native id, run id, state).

        `launch gc` compares them with the store, to find what no record knows about. Only
        this store's: a target on an account other stores share lists theirs in `not_ours`.
        """
        return []

    def not_ours(self) -> list[Foreign]:
        """Resources with a launch label of another store, or of a launch from before labels
        named their store. `launch gc` lists them and frees them only with --all-owners."""
        return []

    def plan(self, spec: JobSpec) -> Plan:
        """Where this job would run and at what price, without creating or spending anything.

        May call the platform's read-only APIs (offer search, quota). Raises only for missing
        credentials or an unreachable platform; a job that cannot run here is a `Plan` with
        `problems`, not an exception.
        """
        return Plan(target=self.name, notes=[f"{self.name} has no planner yet"])

    # ---- derived from the core above --------------------------------------------------------

    def logs(self, handle: H, *, follow: bool = False, poll_s: float = 0.5) -> Iterator[LogLine]:
        """All log lines of the attempt; with `follow`, keep yielding until it has ended."""
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


AnyTarget = Target[Any, Any]
