"""The Kaggle target: the job runs in a generated private kernel on Kaggle's own image.

    prepare   bundle, lower the image to its requirements, warn about what Kaggle cannot give
    submit    one session: bundle dataset (a new version only when the bundle changed); for a
              resumed session a state dataset of the checkpoints to go on from; ledger ->
              SaveKernel
    status    GetKernelSessionStatus through `_NATIVE_STATUS`; once the session ended, the
              agent's status.json from its outputs says how the job ended. A session stopped
              at its cap with the job's time left reads PREEMPTED: the orchestrator pulls and
              starts the next session from the newest checkpoint (chaining).
    cleanup   delete the session's kernel and state dataset (the bundle dataset is kept: reused)

The kernel itself (what runs on Kaggle) is in `kernel.py`; names and models in `handle.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from launcher import agent as agent_mod
from launcher import settings
from launcher.attempts import state_archive
from launcher.errors import NoCapacityError, TargetError, TargetUnavailableError
from launcher.inputs import InputWays, Way
from launcher.progress import MeterFactory
from launcher.sync import LocalTree, PullResult, pull_tree
from launcher.targets.base import (
    AttemptSpec,
    CheckResult,
    Feature,
    Handle,
    Ledger,
    LogLine,
    Notify,
    Phase,
    Plan,
    Prepared,
    Target,
)
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import (
    agent_config,
    job_bundle,
    job_inputs,
    session_cap_or_limit,
)
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle import outputs, sessions
from launcher.targets.kaggle.client import (
    INSTALL_HINT,
    KaggleClient,
    KernelSession,
    LogEntry,
    api_url,
    find_credentials,
    sdk_installed,
)
from launcher.targets.kaggle.datasets import ensure_dataset, pack_input, split_bundle, upload_state
from launcher.targets.kaggle.handle import KaggleHandle, KagglePrepared
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.kaggle.plan import make_plan, quota_left

if TYPE_CHECKING:
    from launcher.spec import JobSpec

_NATIVE_STATUS: Mapping[str, Phase] = {
    "": Phase.QUEUED,  # kagglesdk omits an enum at its default, and QUEUED is that default
    "QUEUED": Phase.QUEUED,
    "NEW_SCRIPT": Phase.STARTING,
    "RUNNING": Phase.RUNNING,
    "CANCEL_REQUESTED": Phase.RUNNING,  # the job is saving its checkpoint
}
_TERMINAL = frozenset({"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"})
GONE_AFTER_S = 120.0  # a kernel missing this long after its push is lost
PULLED = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED or path == agent_mod.STATUS_FILE


class KaggleTarget(Target[KagglePrepared, KaggleHandle]):
    name: ClassVar[str] = "kaggle"
    prepared_model: ClassVar[type[Prepared]] = KagglePrepared
    handle_model: ClassVar[type[Handle]] = KaggleHandle
    stray_kind: ClassVar[str] = "kernel"
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.CUSTOM_IMAGE: "Kaggle runs its own images: the job's image is lowered to its "
        "requirements.txt, installed in the kernel",
    }
    # Kaggle datasets are the kernel's own dataset sources, a local folder becomes a private one;
    # a URL the kernel downloads itself
    input_ways: ClassVar[InputWays] = InputWays(
        kaggle=(Way.PLATFORM,),
        path=(Way.PRIVATE_DATASET,),
        url=(Way.FETCH_THERE,),
        hf=(Way.FETCH_THERE,),
        secrets_there="the kernel's secrets (kaggle.com: Add-ons -> Secrets, attach it)",
    )

    def __init__(
        self,
        home: Path,
        notify: Notify = lambda _m: None,
        client: KaggleClient | None = None,
        meter: MeterFactory | None = None,
    ) -> None:
        super().__init__(home, notify, meter)
        self._client = client
        # how often Kaggle is asked about a kernel (it rate-limits); a poll in between is
        # answered from these read-through caches, keyed by kernel
        self.poll_s = settings.seconds("LAUNCH_KAGGLE_POLL_S", default=5.0)
        self._native: dict[str, tuple[float, KernelSession | None]] = {}
        self._logs: dict[str, tuple[float, list[LogEntry]]] = {}

    @property
    def client(self) -> KaggleClient:
        if self._client is None:
            if not sdk_installed():
                raise TargetUnavailableError(
                    "the kaggle target needs kagglesdk, which is not installed", hint=INSTALL_HINT
                )
            self._client = KaggleClient()
        return self._client

    @classmethod
    def check(cls) -> CheckResult:
        if not sdk_installed():
            return CheckResult(
                ok=False, problems=["kagglesdk is not installed"], hints=[INSTALL_HINT]
            )
        try:
            creds = find_credentials()
        except TargetUnavailableError as e:
            return CheckResult(ok=False, problems=[e.message], hints=[e.hint or ""])
        return CheckResult(ok=True, details={"api": api_url(), "credentials": creds.source})

    def plan(self, spec: JobSpec) -> Plan:
        return make_plan(spec, self.client, self.home, self.notify)

    # ---- prepare / submit -------------------------------------------------------------------

    def prepare(self, spec: JobSpec, run_id: str, workdir: Path) -> KagglePrepared:
        opts: KaggleOptions = spec.targets.for_target("kaggle")
        find_credentials()  # no credentials: say so before building anything
        inputs = job_inputs(spec, type(self), self.notify)
        if inputs.fetch and not opts.internet:
            raise TargetUnavailableError(
                f"input '{inputs.fetch[0].name}' is downloaded by the kernel, which has no "
                "internet: targets.kaggle.internet is false",
                hint="set targets.kaggle.internet: true, or publish the file as a Kaggle dataset",
            )
        kernel = sessions.kernel_job(spec, opts, self.home, self.notify)
        bundle = job_bundle(spec, self.home, self.notify)
        parts = split_bundle(bundle.path, bundle.digest, self.home)
        assets = (
            (names.assets_slug(spec.name), parts.assets_file, parts.assets[1])
            if parts.assets
            else None
        )
        packed = [
            pack_input(self.home, spec.name, name, Path(folder))
            for name, folder in inputs.local.items()
        ]
        gpu = spec.resources.gpu.count > 0
        if opts.allow_chaining:
            hint = f"raise targets.kaggle.max_sessions (now {opts.max_sessions})"
        else:
            hint = (
                f"the job needs more than one Kaggle session ({opts.session_hours:g} h each) "
                "and targets.kaggle.allow_chaining is off"
            )
        return KagglePrepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            agent=agent_config(spec, inputs),
            secrets=list(spec.secrets),
            max_attempts=opts.max_sessions if opts.allow_chaining else 1,
            more_attempts_hint=hint,
            job=spec.name,
            kernel=kernel.model_copy(
                update={
                    "packed": [(p.name, p.slug, p.file, p.sha256) for p in packed],
                    "assets": assets,
                    # what only the inputs' download needs (HF_TOKEN): read from the kernel's
                    # secrets when attached, handed to the agent in a file, never in its env
                    "secrets": list(dict.fromkeys([*kernel.secrets, *inputs.fetch_only_env])),
                }
            ),
            sources=inputs.platform,
            packed=packed,
            parts=parts,
            accelerator=opts.accelerator if gpu else None,
            internet=opts.internet,
        )

    def submit(
        self,
        prepared: KagglePrepared,
        ledger: Ledger,
        attempt: AttemptSpec,
        previous: KaggleHandle | None,
    ) -> KaggleHandle:
        client = self.client
        owner = client.username
        used: float | None = None
        if prepared.accelerator:
            used, left = quota_left(client, prepared.accelerator)
            if attempt.number > 1 and left is not None and left < 2 * _margin(prepared):
                raise NoCapacityError(
                    f"the weekly Kaggle quota is used up ({max(0.0, left) / 3600:.2f} h left); "
                    f"continue after it refreshes with `launch run ... --resume-from "
                    f"{prepared.run_id}`"
                )
        parts = sessions.bundle_parts(prepared)
        bundle_ref = ensure_dataset(
            client,
            owner,
            names.bundle_slug(prepared.job),
            Path(parts.code[0]),
            parts.code_file,
            ledger,
            title=f"launch bundle {prepared.job}"[:50],
            notify=self.notify,
            meter=self.meter,
        )
        input_refs: list[str] = []
        if parts.assets is not None:
            input_refs.append(
                ensure_dataset(
                    client,
                    owner,
                    names.assets_slug(prepared.job),
                    Path(parts.assets[0]),
                    parts.assets_file,
                    ledger,
                    title=f"launch assets {prepared.job}"[:50],
                    notify=self.notify,
                    what="bundle's big files",
                    meter=self.meter,
                )
            )
        input_refs += [
            ensure_dataset(
                client,
                owner,
                p.slug,
                Path(p.archive),
                p.file,
                ledger,
                title=f"launch input {prepared.job} {p.name}"[:50],
                notify=self.notify,
                what=f"input '{p.name}'",
                meter=self.meter,
            )
            for p in prepared.packed
        ]
        h = KaggleHandle(
            run_id=prepared.run_id,
            attempt=attempt.number,
            price_per_hour=Decimal(0),  # free; what it costs is weekly quota (usage())
            owner=owner,
            kernel_slug=names.kernel_slug(prepared.run_id, attempt.number),
            bundle_ref=bundle_ref,
            input_refs=input_refs,
            job_left_s=attempt.time_left_s,
            session_s=prepared.kernel.session_s,
            stop_margin_s=prepared.agent.stop_margin_s,
            accelerator=prepared.accelerator,
            quota_used_at_start=used,
        )
        state: tuple[str, str] | None = None
        if attempt.resume_from is not None:
            slug = names.state_slug(prepared.run_id, attempt.number)
            archive = self.home / "kaggle" / "state" / f"{slug}.tar.gz"
            digest = state_archive(attempt.resume_from, list(attempt.resume_skip), archive)
            title = f"launch state {prepared.run_id} a{attempt.number}"
            upload_state(client, owner, slug, title, archive, ledger)
            h = h.model_copy(update={"state_slug": slug})
            state = (archive.name, digest)
        return sessions.push_kernel(client, prepared, h, ledger, state, self.notify)

    def describe(self, handle: KaggleHandle) -> str:
        return f"kernel {handle.kernel_ref} (session {handle.attempt})"

    # ---- watch ------------------------------------------------------------------------------

    def _session(self, h: KaggleHandle) -> KernelSession | None:
        now = time.monotonic()
        cached = self._native.get(h.kernel_slug)
        if cached is not None and now - cached[0] < self.poll_s:
            return cached[1]
        found = self.client.kernel_session(h.owner, h.kernel_slug)
        self._native[h.kernel_slug] = (now, found)
        return found

    def _cache(self, h: KaggleHandle) -> Path:
        return self.home / "kaggle" / "outputs" / h.run_id / h.kernel_slug

    def _ended(self, h: KaggleHandle, native: KernelSession | None) -> TS:
        """How an ended session ended (its outputs are fetched once, into a cache)."""
        cache = outputs.fetch_outputs(
            self.client, h.owner, h.kernel_slug, self._cache(h), self.meter("download outputs")
        )
        agent = outputs.read_status(cache)
        st = sessions.ended_status(h, native or KernelSession(status="COMPLETE"), agent)
        ran = names.seconds_between(agent.started_at, agent.ended_at) if agent else 0.0
        return session_cap_or_limit(
            st,
            attempt=h.attempt,
            session_s=h.session_s,
            job_left_s=h.job_left_s,
            stop_margin_s=h.stop_margin_s,
            ran_s=ran,
        )

    def status(self, handle: KaggleHandle) -> TS:
        h = handle
        native = self._session(h)
        if native is None:  # not (or no longer) on Kaggle
            if (self._cache(h) / outputs.DONE_MARK).is_file():
                return self._ended(h, None)  # deleted by our cleanup after its outputs came
            if time.time() - h.pushed_at < GONE_AFTER_S:
                return TS(phase=Phase.QUEUED, message=f"{h.kernel_ref} is not visible yet")
            return TS(phase=Phase.LOST, message=f"kernel {h.kernel_ref} is no longer on Kaggle")
        if native.status not in _TERMINAL:
            phase = _NATIVE_STATUS.get(native.status)
            if phase is None:
                self.notify(f"unknown Kaggle kernel status {native.status!r}; read as queued")
                phase = Phase.QUEUED
            cancelling = native.status == "CANCEL_REQUESTED"
            return TS(
                phase=phase,
                message=f"session {h.attempt}" + (": cancelling" if cancelling else ""),
            )
        return self._ended(h, native)

    def _log_entries(self, h: KaggleHandle) -> list[LogEntry]:
        """Kaggle's log stream; the output listing's copy of the log where it cannot be read."""
        entries = self.client.log_stream(h.owner, h.kernel_slug, wait_s=0.3)
        if entries is None:
            entries = outputs.parse_log(self.client.session_output(h.owner, h.kernel_slug)[1])
        return entries

    def read_logs(self, handle: KaggleHandle, cursor: int) -> tuple[list[LogLine], int]:
        h = handle
        now = time.monotonic()
        cached = self._logs.get(h.kernel_slug)
        native = self._session(h)
        ended = native is not None and native.status in _TERMINAL
        if cached is None or now - cached[0] >= self.poll_s or ended:
            try:
                cached = (now, self._log_entries(h))
            except TargetError:
                return [], cursor  # read again next poll: the cursor did not move
            self._logs[h.kernel_slug] = cached
        new = cached[1][cursor:]
        return outputs.to_lines(new), cursor + len(new)

    def pull(self, handle: KaggleHandle, dest: Path) -> PullResult:
        h = handle
        native = self._session(h)
        ended = (self._cache(h) / outputs.DONE_MARK).is_file() or (
            native is not None and native.status in _TERMINAL
        )
        if not ended:  # Kaggle saves /kaggle/working when the session ends
            return PullResult()
        cache = outputs.fetch_outputs(
            self.client, h.owner, h.kernel_slug, self._cache(h), self.meter("download outputs")
        )
        return pull_tree(LocalTree(cache), dest, include=_pulled, meter=self.meter("pull outputs"))

    # ---- stop / free ------------------------------------------------------------------------

    def cancel(self, handle: KaggleHandle) -> None:
        h = handle
        if h.kernel_id is None:
            return
        try:
            # NOTE: CancelKernelSession takes a session id, which no push or status answer
            # carries; the kernel id is what we have [unverified against Kaggle]
            self.client.cancel_kernel_session(h.kernel_id)
        except TargetError as e:
            self.notify(f"could not cancel {h.kernel_ref}: {e.message}")
        self._native.pop(h.kernel_slug, None)

    def cleanup(self, handle: KaggleHandle, *, keep_data: bool = False) -> None:
        h = handle
        self.cancel(handle)
        fetched = (self._cache(h) / outputs.DONE_MARK).is_file()
        if keep_data and not fetched:  # the kernel's outputs hold what was not pulled yet
            self.notify(f"kept kernel {h.kernel_ref} on Kaggle: its outputs were not pulled")
            return
        self.client.delete_kernel(h.owner, h.kernel_slug)
        if h.state_slug:
            self.client.delete_dataset(h.owner, h.state_slug)
        self._native.pop(h.kernel_slug, None)

    def usage(self, handle: KaggleHandle) -> dict[str, float]:
        """The weekly quota this session used: the account's use now minus at its push (other
        kernels running meanwhile on the same account are counted too)."""
        h = handle
        if not h.accelerator or h.quota_used_at_start is None:
            return {}
        used, left = quota_left(self.client, h.accelerator)
        spent = max(0.0, used - h.quota_used_at_start)
        more = f", {left / 3600:.2f} h left this week" if left is not None else ""
        self.notify(
            f"Kaggle {h.accelerator} quota used by session {h.attempt}: {spent / 3600:.2f} h{more}"
        )
        return {"kaggle_quota_hours": round(spent / 3600, 4)}

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        owner, _, slug = native_id.partition("/")
        if data.get("shared") or slug.startswith(
            (names.BUNDLE_PREFIX, names.ASSETS_PREFIX, names.INPUT_PREFIX)
        ):
            return  # the job's bundle or input dataset: a cache later runs reuse
        if not slug:
            return
        if kind == "kernel":
            self.client.delete_kernel(owner, slug)
        elif kind == "dataset":
            self.client.delete_dataset(owner, slug)

    def labelled(self) -> list[tuple[str, str, str]]:
        try:
            return sessions.labelled_kernels(self.client)
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Kaggle kernels: {e.message}")
            return []


def _margin(prepared: KagglePrepared) -> float:
    return prepared.agent.stop_margin_s + 1.0
