"""The Colab target: the job runs in a generated notebook the user opens, reached through Drive.

Consumer Colab has no API to start a notebook, so each session costs the user one click:

    prepare   bundle, lower the image to its requirements, refuse what Colab cannot run
    submit    one session: ledger -> a Drive folder (by id) with the bundle, job.json,
              control.json, for a resumed session state.tar.gz, and the notebook (Colab's MIME
              type, GPU preselected); prints the "Open in Colab" link (opens it when interactive)
    status    from the folder's run/: no heartbeat yet -> QUEUED (waiting for the user); the
              notebook's heartbeat.json and the agent's status.json -> STARTING / RUNNING / how
              the job ended; a heartbeat older than `lost_after_s` -> LOST (a disconnect, an idle
              reclaim, the session cap): the orchestrator pulls and starts the next session,
              whose new link goes on from the newest checkpoint
    cancel    control.json {"desired": "stop"}: the notebook hands it to the agent
    cleanup   the session's folder to Drive's trash (targets.colab.keep keeps it)

Drive access is in drive.py, the notebook in notebook.py, names and models in handle.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from launcher import agent as agent_mod
from launcher.attempts import state_archive
from launcher.errors import TargetError, TargetUnavailableError
from launcher.sync import PullResult, pull_tree
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
from launcher.targets.colab import handle as names
from launcher.targets.colab.drive import (
    AUTH_HINT,
    INSTALL_HINT,
    Drive,
    DriveFile,
    DriveTree,
    credentials_path,
    pydrive2_installed,
    read_credentials,
)
from launcher.targets.colab.endpoint import drive_url
from launcher.targets.colab.handle import ColabHandle, ColabPrepared, NotebookJob
from launcher.targets.colab.notebook import notebook_json
from launcher.targets.colab.options import ColabOptions
from launcher.targets.colab.plan import check_job, make_plan
from launcher.targets.jobfiles import (
    AgentStatus,
    agent_config,
    agent_phase,
    job_bundle,
    parse_log_chunk,
    seconds_between,
    session_cap_or_limit,
)

if TYPE_CHECKING:
    from launcher.spec import JobSpec

COLAB_URL = "https://colab.research.google.com"
PULLED = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED or path == agent_mod.STATUS_FILE


def colab_url() -> str:
    return (os.environ.get("LAUNCH_COLAB_URL") or COLAB_URL).rstrip("/")


def _age_s(stamp: Any) -> float | None:
    """Seconds since an agent timestamp (ISO, Z); None when there is none."""
    from datetime import UTC, datetime

    if stamp is None:
        return None
    try:
        when = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


@dataclass
class _Seen:
    """One look at a session's folder (cached for a poll period)."""

    at: float
    gone: bool
    run: dict[str, DriveFile]  # run/'s files by path
    status: AgentStatus | None
    heartbeat: dict[str, Any] | None


class ColabTarget(Target[ColabPrepared, ColabHandle]):
    name: ClassVar[str] = "colab"
    prepared_model: ClassVar[type[Prepared]] = ColabPrepared
    handle_model: ClassVar[type[Handle]] = ColabHandle
    stray_kind: ClassVar[str] = "folder"
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.CUSTOM_IMAGE: "Colab runs its own runtime: the job's image is lowered to its "
        "requirements.txt, installed in the notebook",
    }

    def __init__(self, home: Path, notify: Notify = lambda _m: None) -> None:
        super().__init__(home, notify)
        self._drive: Drive | None = None
        self.poll_s = float(os.environ.get("LAUNCH_COLAB_POLL_S") or 5.0)
        self._seen: dict[str, _Seen] = {}

    @property
    def drive(self) -> Drive:
        if self._drive is None:
            if not pydrive2_installed():
                raise TargetUnavailableError(
                    "the colab target needs pydrive2, which is not installed", hint=INSTALL_HINT
                )
            self._drive = Drive(self.home)
        return self._drive

    @classmethod
    def check(cls) -> CheckResult:
        if not pydrive2_installed():
            return CheckResult(
                ok=False, problems=["pydrive2 is not installed"], hints=[INSTALL_HINT]
            )
        from launcher.store.db import default_home

        path = credentials_path(default_home())
        try:
            read_credentials(path)
        except TargetUnavailableError as e:
            return CheckResult(ok=False, problems=[e.message], hints=[e.hint or AUTH_HINT])
        where = drive_url() or "Google Drive"
        return CheckResult(ok=True, details={"drive": where, "credentials": str(path)})

    def plan(self, spec: JobSpec) -> Plan:
        opts: ColabOptions = spec.targets.for_target("colab")
        return make_plan(spec, opts, self.home, self.notify)

    # ---- prepare / submit -------------------------------------------------------------------

    def prepare(self, spec: JobSpec, run_id: str, workdir: Path) -> ColabPrepared:
        opts: ColabOptions = spec.targets.for_target("colab")
        read_credentials(credentials_path(self.home))  # none: say so before building anything
        lowered = check_job(spec, opts, self.home, self.notify)
        bundle = job_bundle(spec, self.home, self.notify)
        session_s = opts.session_hours * 3600
        return ColabPrepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            agent=agent_config(spec),
            secrets=list(spec.secrets),
            max_attempts=opts.max_sessions,
            more_attempts_hint=f"raise targets.colab.max_sessions (now {opts.max_sessions})",
            job=spec.name,
            notebook=NotebookJob(
                requirements=lowered.requirements,
                pip_options=lowered.pip_options,
                secrets=list(spec.secrets),
                session_s=session_s,
                safety_s=min(120.0, max(1.0, 0.1 * session_s)),
                sync_s=opts.sync_seconds,
            ),
            gpu=opts.gpu if spec.resources.gpu.count > 0 else None,
            keep=opts.keep,
            lost_after_s=opts.lost_after_minutes * 60,
        )

    def _root(self) -> str:
        """The id of My Drive/launch, found once and remembered (titles are not unique)."""
        drive = self.drive
        where = drive_url() or "google"
        cache = self.home / "colab" / "root-folder.json"
        try:
            known: dict[str, Any] = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        cached = known.get(where)
        if isinstance(cached, str):
            f = drive.get(cached)
            if f is not None and f.is_folder and not f.trashed:
                return cached
        found = [f for f in drive.children("root", title=names.ROOT_TITLE) if f.is_folder]
        if found:
            root = min(found, key=lambda f: (f.modified_ns, f.id)).id
        else:
            root = drive.create_folder(names.ROOT_TITLE, "root", "runs of `launch`")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(dict(known, **{where: root})))
        return root

    def submit(
        self,
        prepared: ColabPrepared,
        ledger: Ledger,
        attempt: AttemptSpec,
        previous: ColabHandle | None,
    ) -> ColabHandle:
        drive = self.drive
        root = self._root()
        n = attempt.number
        title = names.folder_title(prepared.run_id, n)
        ticket = ledger.intent("folder", title, {"parent": root, "title": title})
        folder = drive.create_folder(title, root, f"launch run {prepared.run_id} session {n}")
        ledger.created(ticket, native_id=folder)
        state_sha = None
        if attempt.resume_from is not None:
            archive = self.home / "colab" / "state" / f"{title}.tar.gz"
            state_sha = state_archive(attempt.resume_from, list(attempt.resume_skip), archive)
            drive.upload(folder, names.STATE_FILE, archive, "application/gzip")
            archive.unlink(missing_ok=True)
        job: dict[str, Any] = dict(
            prepared.notebook.model_dump(),
            folder_id=folder,
            run_id=prepared.run_id,
            session=n,
            agent=prepared.agent.for_attempt(prepared.run_id, attempt, input_dir=""),
            bundle_sha256=prepared.bundle_digest,
            state_sha256=state_sha,
            job_left_s=attempt.time_left_s,
            gpu=prepared.gpu,
        )
        drive.upload(folder, names.BUNDLE_FILE, prepared.bundle_path, "application/gzip")
        drive.upload(
            folder, names.JOB_FILE, json.dumps(job, indent=1).encode(), "application/json"
        )
        control = drive.upload(folder, names.CONTROL_FILE, _control("run"), "application/json")
        config = {
            "run_id": prepared.run_id,
            "session": n,
            "folder_title": title,
            "folder_id": folder,
            "root_title": names.ROOT_TITLE,
        }
        nb = drive.upload(
            folder, f"{title}.ipynb", notebook_json(config, prepared.gpu), names.NOTEBOOK_MIME
        )
        link = f"{colab_url()}/drive/{nb.id}"
        self.notify(f"open the notebook of session {n} and choose Runtime -> Run all: {link}")
        _open_in_browser(link)
        return ColabHandle(
            run_id=prepared.run_id,
            attempt=n,
            price_per_hour=Decimal(0) if prepared.gpu in (None, "T4") else None,
            folder_title=title,
            folder_id=folder,
            notebook_id=nb.id,
            control_id=control.id,
            link=link,
            submitted_at=time.time(),
            job_left_s=attempt.time_left_s,
            session_s=prepared.notebook.session_s,
            stop_margin_s=prepared.agent.stop_margin_s,
            sync_s=prepared.notebook.sync_s,
            lost_after_s=prepared.lost_after_s,
            keep=prepared.keep,
        )

    def describe(self, handle: ColabHandle) -> str:
        return f"Colab session {handle.attempt}: {handle.link}"

    # ---- watch ------------------------------------------------------------------------------

    def _look(self, h: ColabHandle, *, fresh: bool = False) -> _Seen:
        now = time.monotonic()
        key = h.folder_id or h.folder_title
        seen = self._seen.get(key)
        if seen is not None and not fresh and now - seen.at < self.poll_s:
            return seen
        drive = self.drive
        folder = drive.get(h.folder_id) if h.folder_id else None
        if folder is None or folder.trashed:
            seen = _Seen(at=now, gone=True, run={}, status=None, heartbeat=None)
        else:
            run = [f for f in drive.children(folder.id, title=names.RUN_DIR) if f.is_folder]
            files = drive.tree(run[0].id) if run else {}
            status = heartbeat = None
            if agent_mod.STATUS_FILE in files:
                status = AgentStatus.parse(drive.read_all(files[agent_mod.STATUS_FILE].id))
            if names.HEARTBEAT_FILE in files:
                heartbeat = _json(drive.read_all(files[names.HEARTBEAT_FILE].id))
            seen = _Seen(at=now, gone=False, run=files, status=status, heartbeat=heartbeat)
        self._seen[key] = seen
        return seen

    def status(self, handle: ColabHandle) -> TS:
        h = handle
        seen = self._look(h)
        if seen.gone:
            return TS(phase=Phase.LOST, message=f"the Drive folder of session {h.attempt} is gone")
        st, beat = seen.status, seen.heartbeat
        if st is None and beat is None:
            return TS(phase=Phase.QUEUED, message=f"waiting for you to open {h.link}")
        if st is not None and st.phase == "exited":
            waited = _age_s(st.ended_at)
            if not _settled(seen) and (waited is None or waited < h.lost_after_s):
                why = f"session {h.attempt}: its last files are on their way to Drive"
                return TS(phase=Phase.RUNNING, message=why)
            ended = agent_phase(st, alive=False)
            if ended.phase is Phase.STOPPED and st.stop_reason == "control" and not st.started_at:
                return ended.model_copy(update={"message": "cancelled before it started"})
            return session_cap_or_limit(
                ended,
                attempt=h.attempt,
                session_s=h.session_s,
                job_left_s=h.job_left_s,
                stop_margin_s=h.stop_margin_s,
                ran_s=_ran_s(st),
            )
        ages = [a for a in (_age_s((beat or {}).get("at")), _age_s(st and st.heartbeat_at)) if a]
        age = min(ages) if ages else None
        if age is not None and age > h.lost_after_s:
            return TS(
                phase=Phase.LOST,
                message=f"Colab session {h.attempt} stopped answering {age / 60:.1f} min ago "
                "(the tab closed, a disconnect, an idle reclaim or the session cap)",
                heartbeat_at=st.heartbeat_at if st else None,
                last_checkpoint=st.last_checkpoint if st else None,
            )
        if st is None:
            step = str((beat or {}).get("step") or "starting")
            return TS(phase=Phase.STARTING, message=f"session {h.attempt}: {step}")
        running = agent_phase(st, alive=True)
        return running.model_copy(update={"message": f"session {h.attempt}"})

    def read_logs(self, handle: ColabHandle, cursor: int) -> tuple[list[LogLine], int]:
        seen = self._look(handle)
        log = seen.run.get(agent_mod.LOG_FILE)
        if log is None or log.size <= cursor:
            return [], cursor
        try:
            chunk = self.drive.read_range(log.id, cursor, log.size - 1)
        except TargetError:
            return [], cursor  # read again next poll: the cursor did not move
        lines, used = parse_log_chunk(chunk)
        return lines, cursor + used

    def pull(self, handle: ColabHandle, dest: Path) -> PullResult:
        seen = self._look(handle, fresh=True)
        if seen.gone or not seen.run:
            return PullResult()
        run = [f for f in self.drive.children(handle.folder_id or "", title=names.RUN_DIR)]
        if not run:
            return PullResult()
        return pull_tree(DriveTree(self.drive, run[0].id), dest, include=_pulled)

    # ---- stop / free ------------------------------------------------------------------------

    def _control(self, h: ColabHandle, desired: str) -> None:
        if h.control_id is None:
            return
        try:
            if self.drive.get(h.control_id) is not None:
                self.drive.update(h.control_id, _control(desired))
        except TargetError as e:
            self.notify(f"could not ask Colab session {h.attempt} to stop: {e.message}")

    def cancel(self, handle: ColabHandle) -> None:
        self._control(handle, "stop")

    def kill(self, handle: ColabHandle) -> None:
        self._control(handle, "kill")

    def cleanup(self, handle: ColabHandle, *, keep_data: bool = False) -> None:
        h = handle
        if h.folder_id is None:
            return
        seen = self._look(h, fresh=True)
        if seen.gone:
            return
        if seen.status is None or seen.status.phase != "exited":
            self._control(h, "stop")  # a session still open in a tab stops its job
        if h.keep or keep_data:
            why = "targets.colab.keep" if h.keep else "its outputs were not all pulled"
            self.notify(f"kept Drive folder launch/{h.folder_title} ({why})")
            return
        self.drive.trash(h.folder_id)
        self._seen.pop(h.folder_id, None)

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if kind != "folder":
            return
        found = self.drive.get(native_id)
        if found is not None:
            self.drive.trash(native_id)
            return
        parent, title = data.get("parent"), data.get("title")
        if isinstance(parent, str) and isinstance(title, str):  # killed before its id was known
            for f in self.drive.children(parent, title=title):
                self.drive.trash(f.id)

    def labelled(self) -> list[tuple[str, str, str]]:
        try:
            root = self._root()
            found: list[tuple[str, str, str]] = []
            for f in self.drive.children(root):
                run = names.run_of_title(f.title)
                if run is not None and f.is_folder:
                    found.append((f.id, run, "folder"))
            return found
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list the launch folder in Drive: {e.message}")
            return []


def _settled(seen: _Seen) -> bool:
    """The notebook's last round reached Drive: its final heartbeat, and the log up to the size
    that heartbeat names (Drive's mount sends files in no set order)."""
    beat = seen.heartbeat or {}
    log = seen.run.get(agent_mod.LOG_FILE)
    want = beat.get("log_bytes")
    size = log.size if log is not None else 0
    return beat.get("step") == "ended" and isinstance(want, int) and size >= want


def _control(desired: str) -> bytes:
    return json.dumps({"desired": desired}).encode()


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None
    return cast("dict[str, Any]", data) if isinstance(data, dict) else None


def _ran_s(st: AgentStatus) -> float:
    return seconds_between(st.started_at, st.ended_at)


def _open_in_browser(link: str) -> None:
    """Open the link for a user at a terminal; never in scripts, CI or tests."""
    if os.environ.get("LAUNCH_NO_BROWSER") or os.environ.get("CI") or not sys.stdout.isatty():
        return
    import webbrowser

    try:
        webbrowser.open(link, new=2)
    except webbrowser.Error:
        pass
