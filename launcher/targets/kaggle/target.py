"""The Kaggle target: the job runs in a generated private kernel on Kaggle's own image.

    prepare   bundle, lower the image to its requirements, warn about what Kaggle cannot give
    submit    one session: bundle dataset (a new version only when the bundle changed); for a
              resumed session a state dataset of the checkpoints to go on from; ledger ->
              SaveKernel
    status    GetKernelSessionStatus through `_NATIVE_STATUS`; once the session ended, the
              agent's status.json from its outputs says how the job ended. A session stopped
              at its cap with the job's time left reads PREEMPTED: the orchestrator pulls and
              starts the next session from the newest checkpoint (chaining).
    cancel    CancelKernelSession with the id of the kernel's session, which only the kernel
              knows: it says it first in its log, and `advance` stores it in the handle
    cleanup   delete the session's kernel and state dataset once its outputs are home (the bundle
              dataset is kept: reused); a kernel deleted takes its outputs, checkpoints too

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
from launcher.errors import NoCapacityError, SubmitError, TargetError, TargetUnavailableError
from launcher.inputs import InputWays, Way
from launcher.progress import MeterFactory
from launcher.store.identity import store_key
from launcher.sync import LocalTree, PullResult, pull_tree
from launcher.targets.base import (
    AttemptSpec,
    CheckResult,
    Feature,
    Foreign,
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
from launcher.targets.kaggle.rpc import KaggleNotFoundError, KernelInfo

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
_NOT_RUN = frozenset({"", "QUEUED", "NEW_SCRIPT"})  # nothing ran: nothing to save or lose
_STOPPING = _TERMINAL | {"CANCEL_REQUESTED"}
SESSION_ID_WAIT_S = 20.0  # a kernel that just started says its session id within this
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
            self._client = KaggleClient(notify=self.notify)
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
            kernel_slug=names.kernel_slug(prepared.run_id, attempt.number, store_key(self.home)),
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
        try:
            return sessions.push_kernel(
                client, prepared, h, ledger, state, self.notify, store_key(self.home)
            )
        except SubmitError:
            # Kaggle refused what the push named after making the kernel, which started a
            # moment ago with nothing to keep: deleted here, as release_resource keeps a
            # running kernel whose outputs are not home
            try:
                client.delete_kernel(owner, h.kernel_slug)
            except TargetError:
                pass  # the ledger's release tries again
            raise

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

    def _log(self, owner: str, slug: str, *, fresh: bool = False) -> list[LogEntry]:
        """The session's log so far: Kaggle's log stream, the output listing's copy where that
        cannot be read. Asked at most once per poll unless `fresh`."""
        now = time.monotonic()
        cached = self._logs.get(slug)
        if cached is None or fresh or now - cached[0] >= self.poll_s:
            entries = self.client.log_stream(owner, slug, wait_s=0.3)
            if entries is None:
                entries = outputs.parse_log(self.client.session_output(owner, slug)[1])
            cached = (now, entries)
            self._logs[slug] = cached
        return cached[1]

    def read_logs(self, handle: KaggleHandle, cursor: int) -> tuple[list[LogLine], int]:
        h = handle
        native = self._session(h)
        ended = native is not None and native.status in _TERMINAL
        try:
            entries = self._log(h.owner, h.kernel_slug, fresh=ended)
        except TargetError:
            return [], cursor  # read again next poll: the cursor did not move
        new = entries[cursor:]
        return outputs.to_lines(new), cursor + len(new)

    def advance(
        self, prepared: KagglePrepared, handle: KaggleHandle, ledger: Ledger
    ) -> KaggleHandle | None:
        """Store the kernel's session id once its log shows it: a cancel from any launcher
        (the stored handle is what `launch cancel` and `launch gc` have) needs it."""
        h = handle
        if h.kernel_session_id is not None:
            return None
        try:
            found = outputs.session_id(self._log(h.owner, h.kernel_slug))
        except TargetError:
            return None  # looked for again at the next probe
        return h.model_copy(update={"kernel_session_id": found}) if found else None

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
        """Ask the job to stop (SIGTERM: the agent saves a checkpoint) through Kaggle's
        CancelKernelSession. A kernel not started yet is deleted instead: it has saved nothing,
        and it has not said the session id a cancel needs. Raises `TargetError` when Kaggle
        did not take the cancel: the job is then still running."""
        h = handle
        self._stop(h.owner, h.kernel_slug, h.kernel_session_id, h.run_id)

    def _stop(self, owner: str, slug: str, sid: int | None, run_id: str) -> None:
        ref = f"{owner}/{slug}"
        self._native.pop(slug, None)
        native = self.client.kernel_session(owner, slug)
        if native is None or native.status in _STOPPING:
            return  # gone, ended, or stopping already
        if native.status in _NOT_RUN:
            self.client.delete_kernel(owner, slug)
            self.notify(f"deleted kernel {ref}: its session had not started")
            return
        sid = sid or self._said_session_id(owner, slug)
        if sid is None:
            raise TargetError(
                f"cannot cancel kernel {ref}: it has not said its session id, which Kaggle's "
                f"cancel takes, within {SESSION_ID_WAIT_S:g} s",
                hint=_finish_hint(ref, run_id, running=True),
            )
        try:
            refused = self.client.cancel_kernel_session(sid)
        except KaggleNotFoundError as e:
            refused = e.message
        if not refused:
            return
        after = self.client.kernel_session(owner, slug)
        if after is None or after.status in _STOPPING:
            return  # it ended meanwhile
        raise TargetError(
            f"Kaggle did not cancel session {sid} of kernel {ref}: {refused}",
            hint=_finish_hint(ref, run_id, running=True),
        )

    def _said_session_id(self, owner: str, slug: str) -> int | None:
        """The session id from the kernel's log, waiting a little for a kernel just started."""
        deadline = time.monotonic() + SESSION_ID_WAIT_S
        while True:
            try:
                found = outputs.session_id(self._log(owner, slug, fresh=True))
            except TargetError:
                found = None
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(1.0)

    def cleanup(self, handle: KaggleHandle, *, keep_data: bool = False) -> None:
        """Delete the session's kernel (and state dataset) once its outputs are home: a kernel
        goes with its outputs, the checkpoints among them. One still running is asked to stop
        and kept, and so is one whose outputs cannot be fetched now: an error that names the
        commands that finish (`keep_data`: a note, the orchestrator reports the pull)."""
        h = handle
        self._native.pop(h.kernel_slug, None)
        native = self.client.kernel_session(h.owner, h.kernel_slug)
        if native is not None:
            why = self._not_home(h.owner, h.kernel_slug, h.run_id, native, h.kernel_session_id)
            if why is not None:
                running = native.status not in _TERMINAL
                hint = _finish_hint(h.kernel_ref, h.run_id, running=running)
                if keep_data:
                    self.notify(f"kept kernel {h.kernel_ref} on Kaggle: {why}; {hint}")
                    return
                raise TargetError(f"kept kernel {h.kernel_ref} on Kaggle: {why}", hint=hint)
            self.client.delete_kernel(h.owner, h.kernel_slug)
        if h.state_slug:
            self.client.delete_dataset(h.owner, h.state_slug)
        self._native.pop(h.kernel_slug, None)

    def _not_home(
        self, owner: str, slug: str, run_id: str, native: KernelSession, sid: int | None
    ) -> str | None:
        """Why the kernel's outputs are not on this machine (None: they are, or there are
        none); an ended session's are fetched first, a running one is asked to stop."""
        cache = self.home / "kaggle" / "outputs" / run_id / slug
        if (cache / outputs.DONE_MARK).is_file() or native.status in _NOT_RUN:
            return None
        if native.status in _TERMINAL:
            try:
                outputs.fetch_outputs(
                    self.client, owner, slug, cache, self.meter("download outputs")
                )
            except TargetError as e:
                return f"its outputs could not be fetched ({e.message})"
            return None
        try:
            self._stop(owner, slug, sid, run_id)
        except TargetError as e:
            return f"its session is still running ({e.message})"
        return (
            "its session was still running; it was asked to stop (saving a checkpoint), and "
            "its outputs can be fetched once it has"
        )

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
            native = self.client.kernel_session(owner, slug)
            if native is None:
                return  # gone already
            run_id = self._run_of(owner, slug, data)
            why = self._not_home(owner, slug, run_id, native, None)
            if why is not None:
                raise TargetError(
                    f"kept kernel {native_id} on Kaggle: {why}",
                    hint=_finish_hint(native_id, run_id, running=native.status not in _TERMINAL),
                )
            self.client.delete_kernel(owner, slug)
        elif kind == "dataset":
            self.client.delete_dataset(owner, slug)

    def _run_of(self, owner: str, slug: str, data: Mapping[str, Any]) -> str:
        """The run a kernel was pushed for, from its title: the ledger's copy, else Kaggle's
        (where its outputs are kept for `launch pull`)."""
        parsed = names.parse_title(str(data.get("title") or ""))
        if parsed is None:
            meta = self.client.kernel_meta(owner, slug)
            parsed = names.parse_title(meta.title) if meta is not None else None
        return parsed[0] if parsed is not None else slug

    def labelled(self) -> list[tuple[str, str, str]]:
        """Kernels this store pushed: (owner/slug, run id, "kernel")."""
        mine = store_key(self.home)
        return [(k.ref, run, "kernel") for k, run, owner in self._kernels() if owner == mine]

    def not_ours(self) -> list[Foreign]:
        mine = store_key(self.home)
        return [
            Foreign(native_id=k.ref, run_id=run, state="kernel", label=k.title, owner=owner)
            for k, run, owner in self._kernels()
            if owner != mine
        ]

    def _kernels(self) -> list[tuple[KernelInfo, str, str]]:
        try:
            return sessions.launch_kernels(self.client)
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Kaggle kernels: {e.message}")
            return []


def _finish_hint(ref: str, run_id: str, *, running: bool) -> str:
    stop = (
        f"stop it on kaggle.com (https://www.kaggle.com/code/{ref}, Stop session) or let it "
        "reach its time limit; once it has ended, "
        if running
        else ""
    )
    return f"{stop}`launch pull {run_id}` brings its outputs home, then `launch gc` deletes it"


def _margin(prepared: KagglePrepared) -> float:
    return prepared.agent.stop_margin_s + 1.0
