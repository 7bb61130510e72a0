"""The Kaggle target: the job runs in a generated private kernel on Kaggle's own image.

    prepare   bundle, lower the image to its requirements, warn about what Kaggle cannot give
    submit    bundle dataset (a new version only when the bundle changed) -> ledger -> SaveKernel
    status    GetKernelSessionStatus through `_NATIVE_STATUS`; once the session ended, the
              agent's status.json from its outputs says how the job ended
    advance   a session that stopped at its cap, with the job not done: pull, upload the state
              (checkpoints, outputs, logs) as a dataset version, push the next session's kernel
    cleanup   delete this run's kernels and state dataset (the bundle dataset is kept: reused)

The kernel itself (what runs on Kaggle) is in `kernel.py`; names and handle data in `handle.py`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from launcher import agent as agent_mod
from launcher.errors import TargetError, TargetUnavailableError
from launcher.state import RunHandle
from launcher.sync import LocalTree, PullResult, pull_tree
from launcher.targets.base import (
    CheckResult,
    Feature,
    Ledger,
    LogLine,
    Phase,
    Plan,
    Prepared,
    Target,
)
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import job_bundle
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle import outputs, sessions
from launcher.targets.kaggle.client import (
    INSTALL_HINT,
    KaggleClient,
    KaggleNotFoundError,
    api_url,
    find_credentials,
    sdk_installed,
)
from launcher.targets.kaggle.datasets import delete_dataset, ensure_dataset, upload_state
from launcher.targets.kaggle.handle import KaggleHandle
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.kaggle.plan import make_plan, quota_left

_NATIVE_STATUS: Mapping[str, Phase] = {
    "": Phase.QUEUED,  # kagglesdk omits an enum at its default, and QUEUED is that default
    "QUEUED": Phase.QUEUED,
    "NEW_SCRIPT": Phase.STARTING,
    "RUNNING": Phase.RUNNING,
    "CANCEL_REQUESTED": Phase.RUNNING,  # the job is saving its checkpoint
}
_TERMINAL = frozenset({"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"})
_GONE = "GONE"  # ours: GetKernelSessionStatus answered 404
GONE_AFTER_S = 120.0  # a kernel missing this long after it was seen is lost
PULLED = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED or path == agent_mod.STATUS_FILE


class KaggleTarget(Target):
    name: ClassVar[str] = "kaggle"
    stray_kind: ClassVar[str] = "kernel"
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.CUSTOM_IMAGE: "Kaggle runs its own images: the job's image is lowered to its "
        "requirements.txt, installed in the kernel",
    }

    def __init__(
        self,
        home: Path,
        notify: Callable[[str], None] = lambda _m: None,
        client: KaggleClient | None = None,
    ) -> None:
        self.home = home
        self.notify = notify
        self._client = client
        # how often Kaggle is asked about a run (it rate-limits); a poll in between is cached
        self.poll_s = float(os.environ.get("LAUNCH_KAGGLE_POLL_S") or 5.0)
        self._native: dict[str, tuple[float, dict[str, Any]]] = {}
        self._ended: dict[str, TS] = {}  # kernel slug -> how its session ended
        self._logs: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._latest: dict[str, KaggleHandle] = {}
        self._cursor: dict[str, int] = {}
        self._waited: set[str] = set()
        self._cancelled: set[str] = set()
        self._gone_since: dict[str, float] = {}

    @property
    def client(self) -> KaggleClient:
        if self._client is None:
            if not sdk_installed():
                raise TargetUnavailableError(
                    "the kaggle target needs kagglesdk, which is not installed", hint=INSTALL_HINT
                )
            self._client = KaggleClient()
        return self._client

    def _h(self, handle: RunHandle) -> KaggleHandle:
        """The newest handle: advance() may have moved the run to a later session."""
        mine = self._latest.get(handle.run_id)
        return mine if mine is not None else KaggleHandle.model_validate(handle.data)

    def _store(self, handle: RunHandle, h: KaggleHandle) -> RunHandle:
        self._latest[handle.run_id] = h
        return handle.model_copy(update={"data": h.model_dump()})

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

    def plan(self, spec: Any) -> Plan:
        return make_plan(spec, self.client)

    # ---- prepare / submit -------------------------------------------------------------------

    def prepare(self, spec: Any, run_id: str, workdir: Path) -> Prepared:
        opts: KaggleOptions = spec.targets.for_target("kaggle")
        find_credentials()  # no credentials: say so before building anything
        local = [i.path for i in spec.inputs if i.kaggle is None]
        if local:
            raise TargetUnavailableError(
                f"the kaggle target mounts Kaggle datasets only, not local folders ({local[0]})",
                hint="upload the folder as a private Kaggle dataset and name it "
                "`inputs: [{kaggle: owner/slug}]`",
            )
        bundle = job_bundle(spec, self.home, self.notify)
        config = sessions.kernel_config(spec, opts, self.home, self.notify)
        session_s = float(config["session_s"])
        gpu = spec.resources.gpu.count > 0
        limit = spec.limits.max_hours * 3600 if spec.limits.max_hours else None
        return Prepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            secrets=list(spec.secrets),
            data={
                "job": spec.name,
                "output_dir": str(workdir),
                "kernel_config": config,
                "sources": [str(i.kaggle) for i in spec.inputs],
                "accelerator": opts.accelerator if gpu else None,
                "internet": opts.internet,
                "session_s": session_s,
                "job_limit_s": limit,
                "allow_chaining": opts.allow_chaining,
                "max_sessions": opts.max_sessions,
            },
        )

    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        d = prepared.data
        owner = self.client.username
        run_id = prepared.run_id
        bundle_file = f"bundle-{prepared.bundle_digest[:16]}.tar.gz"
        bundle_ref = ensure_dataset(
            self.client,
            owner,
            names.bundle_slug(str(d["job"])),
            prepared.bundle_path,
            bundle_file,
            ledger,
            title=f"launch bundle {d['job']}"[:50],
            notify=self.notify,
        )
        h = KaggleHandle.first(
            run_id, owner, d, bundle_ref=bundle_ref, bundle_file=bundle_file,
            bundle_sha256=prepared.bundle_digest,
        )  # fmt: skip
        if h.accelerator:
            h.quota_used_at_start = quota_left(self.client, h.accelerator)[0]
        state: tuple[str, str] | None = None
        if prepared.resume_checkpoints is not None:
            archive = self.home / "kaggle" / "state" / f"{run_id}-resume.tar.gz"
            digest = outputs.state_archive(
                prepared.resume_checkpoints.parent, archive, (prepared.resume_checkpoints.name,)
            )
            h.state_version = upload_state(self.client, h, archive, ledger)
            state = (archive.name, digest)
        h = sessions.push_kernel(self.client, h, ledger, state, self.notify)
        return RunHandle(
            target=self.name, run_id=run_id, data=h.model_dump(), price_per_hour=Decimal(0)
        )

    # ---- watch ------------------------------------------------------------------------------

    def _native_status(self, h: KaggleHandle) -> dict[str, Any]:
        now = time.monotonic()
        cached = self._native.get(h.kernel_slug)
        if cached is not None and now - cached[0] < self.poll_s:
            return cached[1]
        try:
            resp = self.client.call(
                "kernels",
                "get_kernel_session_status",
                {"userName": h.owner, "kernelSlug": h.kernel_slug},
            )
        except KaggleNotFoundError:
            resp = {"status": _GONE}
        self._native[h.kernel_slug] = (now, resp)
        return resp

    def _gone_status(self, h: KaggleHandle) -> TS:
        """The kernel is not (or no longer) on Kaggle: deleted by our cleanup after its outputs
        were fetched, deleted by hand, or not visible yet right after the push."""
        cache = self._cache(h)
        if (cache / outputs.DONE_MARK).is_file():
            return sessions.ended_status(h, {}, cache)
        since = self._gone_since.setdefault(h.kernel_slug, time.monotonic())
        if time.monotonic() - since < GONE_AFTER_S:
            return TS(phase=Phase.QUEUED, message=f"{h.kernel_ref} is not visible on Kaggle yet")
        return TS(phase=Phase.LOST, message=f"kernel {h.kernel_ref} is no longer on Kaggle")

    def _cache(self, h: KaggleHandle) -> Path:
        return self.home / "kaggle" / "outputs" / h.run_id / h.kernel_slug

    def _ended_status(self, h: KaggleHandle, native: Mapping[str, Any]) -> TS:
        done = self._ended.get(h.kernel_slug)
        if done is None:
            outputs.fetch_outputs(self.client, h.owner, h.kernel_slug, self._cache(h))
            done = self._ended[h.kernel_slug] = sessions.ended_status(h, native, self._cache(h))
        return done

    def _chain_blocker(self, h: KaggleHandle, st: TS) -> str | None:
        ran = self._session_seconds(h)
        cancelled = h.run_id in self._cancelled
        return sessions.chain_blocker(self.client, h, st, ran, cancelled)

    def _session_seconds(self, h: KaggleHandle) -> float:
        st = outputs.read_status(self._cache(h)) or {}
        return names.seconds_between(st.get("started_at"), st.get("ended_at"))

    def status(self, handle: RunHandle) -> TS:
        h = self._h(handle)
        native = self._native_status(h)
        state = str(native.get("status") or "").upper()
        if state == _GONE:
            return self._gone_status(h)
        self._gone_since.pop(h.kernel_slug, None)
        if state not in _TERMINAL:
            phase = _NATIVE_STATUS.get(state)
            if phase is None:
                self.notify(f"unknown Kaggle kernel status {state!r}; treating it as queued")
                phase = Phase.QUEUED
            msg = f"session {h.session}" + (": cancelling" if state == "CANCEL_REQUESTED" else "")
            return TS(phase=phase, message=msg)
        st = self._ended_status(h, native)
        blocker = self._chain_blocker(h, st)
        if blocker is None:
            return TS(
                phase=Phase.RUNNING,
                message=f"session {h.session} stopped before Kaggle's cap; continuing",
                last_checkpoint=st.last_checkpoint,
                last_metrics=st.last_metrics,
            )
        if st.phase is Phase.STOPPED and st.stop_reason == "time_limit":
            why = st.message or f"session {h.session} stopped at its time limit"
            return st.model_copy(update={"message": f"{why}: {blocker}"})
        return st

    def advance(self, handle: RunHandle, ledger: Ledger) -> RunHandle | None:
        h = self._h(handle)
        state = str(self._native_status(h).get("status") or "").upper()
        if state not in _TERMINAL:
            return None
        st = self._ended_status(h, self._native_status(h))
        if self._chain_blocker(h, st) is not None:
            return None
        end = h.log_base + len(self._log_entries(h))
        if self._cursor.get(h.run_id, end) < end and h.kernel_slug not in self._waited:
            self._waited.add(h.kernel_slug)  # one more poll, to show the session's last lines
            return None
        dest = Path(h.output_dir)
        self.pull(handle, dest)
        archive = self.home / "kaggle" / "state" / f"{h.run_id}-s{h.session}.tar.gz"
        digest = outputs.state_archive(dest, archive)
        version = upload_state(self.client, h, archive, ledger)
        ran = self._session_seconds(h)
        self.notify(
            f"session {h.session} ended ({st.message or 'the job stopped at its time limit'}) "
            f"after {ran:.0f}s with checkpoint {st.last_checkpoint}; "
            f"starting session {h.session + 1} from it"
        )
        nxt = h.model_copy(
            update={
                "session": h.session + 1,
                "kernel_slug": names.kernel_slug(h.run_id, h.session + 1),
                "kernel_id": None,
                "state_version": version,
                "used_s": h.used_s + ran,
                "log_base": end,
            }
        )
        nxt = sessions.push_kernel(self.client, nxt, ledger, (archive.name, digest), self.notify)
        return self._store(handle, nxt)

    def _log_entries(self, h: KaggleHandle) -> list[dict[str, Any]]:
        """Kaggle's log stream; the output listing's copy of the log where it cannot be read."""
        entries = self.client.log_stream(h.owner, h.kernel_slug, wait_s=0.3)
        if entries is None:
            log = outputs.list_output(self.client, h.owner, h.kernel_slug)[1]
            entries = outputs.log_entries(log)
        return entries

    def read_logs(self, handle: RunHandle, cursor: int) -> tuple[list[LogLine], int]:
        h = self._h(handle)
        now = time.monotonic()
        cached = self._logs.get(h.kernel_slug)
        ended = str(self._native_status(h).get("status") or "").upper() in _TERMINAL
        if cached is None or now - cached[0] >= self.poll_s or ended:
            try:
                cached = (now, self._log_entries(h))
            except TargetError:
                return [], cursor  # read again next poll: the cursor did not move
            self._logs[h.kernel_slug] = cached
        start = max(0, cursor - h.log_base)
        new = cached[1][start:]
        cursor = h.log_base + start + len(new)
        self._cursor[h.run_id] = cursor
        return outputs.to_lines(new), cursor

    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        h = self._h(handle)
        state = str(self._native_status(h).get("status") or "").upper()
        if state not in _TERMINAL:  # Kaggle saves /kaggle/working when the session ends
            return PullResult()
        cache = outputs.fetch_outputs(self.client, h.owner, h.kernel_slug, self._cache(h))
        return pull_tree(LocalTree(cache), dest, include=_pulled)

    # ---- stop / free ------------------------------------------------------------------------

    def cancel(self, handle: RunHandle) -> None:
        h = self._h(handle)
        self._cancelled.add(h.run_id)
        if h.kernel_id is None:
            return
        try:
            # NOTE: CancelKernelSession takes a session id, which no push or status answer
            # carries; the kernel id is what we have [unverified against Kaggle]
            self.client.call("kernels", "cancel_kernel_session", {"kernelSessionId": h.kernel_id})
        except KaggleNotFoundError:
            pass  # already gone
        except TargetError as e:
            self.notify(f"could not cancel {h.kernel_ref}: {e.message}")
        self._native.pop(h.kernel_slug, None)

    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        h = self._h(handle)
        self.cancel(handle)
        fetched = (self._cache(h) / outputs.DONE_MARK).is_file()
        if keep_data and not fetched:  # the kernel's outputs hold what was not pulled yet
            self.notify(f"kept kernel {h.kernel_ref} on Kaggle: its outputs were not pulled")
            return
        for slug in h.kernels:
            sessions.delete_kernel(self.client, h.owner, slug)
        if h.state_version:
            delete_dataset(self.client, h.owner, h.state_slug)

    def usage(self, handle: RunHandle) -> dict[str, float]:
        """The weekly quota this run used: the account's use now minus at the first push (other
        kernels running meanwhile on the same account are counted too)."""
        h = self._h(handle)
        if not h.accelerator or h.quota_used_at_start is None:
            return {}
        used, left = quota_left(self.client, h.accelerator)
        spent = max(0.0, used - h.quota_used_at_start)
        more = f", {left / 3600:.2f} h left this week" if left is not None else ""
        self.notify(f"Kaggle {h.accelerator} quota used by this run: {spent / 3600:.2f} h{more}")
        return {"kaggle_quota_hours": round(spent / 3600, 4)}

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        owner, _, slug = native_id.partition("/")
        if data.get("shared") or slug.startswith(names.BUNDLE_PREFIX) or not slug:
            return  # the job's bundle dataset: a cache later runs reuse, not this run's
        if kind == "kernel":
            sessions.delete_kernel(self.client, owner, slug)
        elif kind == "dataset":
            delete_dataset(self.client, owner, slug)

    def labelled(self) -> list[tuple[str, str, str]]:
        try:
            return sessions.labelled_kernels(self.client)
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Kaggle kernels: {e.message}")
            return []
