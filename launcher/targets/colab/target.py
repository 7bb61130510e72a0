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

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from launcher import agent as agent_mod
from launcher import settings
from launcher.attempts import state_archive
from launcher.errors import TargetError, TargetUnavailableError
from launcher.inputs import InputWays, Way, pack_folder
from launcher.progress import MeterFactory
from launcher.sync import PullResult, pull_tree
from launcher.targets.base import (
    AttemptSpec,
    CheckResult,
    Feature,
    Handle,
    Ledger,
    LogLine,
    Notify,
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
    credentials_path,
    pydrive2_installed,
    read_credentials,
)
from launcher.targets.colab.endpoint import drive_url
from launcher.targets.colab.handle import (
    ColabHandle,
    ColabPrepared,
    NotebookConfig,
    NotebookJob,
    PackedDriveInput,
    SessionJob,
)
from launcher.targets.colab.notebook import notebook_json
from launcher.targets.colab.options import ColabOptions
from launcher.targets.colab.plan import check_job, make_plan
from launcher.targets.colab.session import Watch
from launcher.targets.colab.tree import DriveTree
from launcher.targets.jobfiles import agent_config, job_bundle, job_inputs, parse_log_chunk

if TYPE_CHECKING:
    from launcher.spec import JobSpec

COLAB_URL = "https://colab.research.google.com"
PULLED = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED or path == agent_mod.STATUS_FILE


def colab_url() -> str:
    return (settings.url("LAUNCH_COLAB_URL") or COLAB_URL).rstrip("/")


def home_key(home: Path) -> str:
    """A short stable id of a LAUNCH_HOME: which store a Drive folder belongs to."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]


class ColabTarget(Target[ColabPrepared, ColabHandle]):
    name: ClassVar[str] = "colab"
    prepared_model: ClassVar[type[Prepared]] = ColabPrepared
    handle_model: ClassVar[type[Handle]] = ColabHandle
    stray_kind: ClassVar[str] = "folder"
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.CUSTOM_IMAGE: "Colab runs its own runtime: the job's image is lowered to its "
        "requirements.txt, installed in the notebook",
    }
    # the runtime has the internet: it downloads a URL or a Kaggle dataset itself
    input_ways: ClassVar[InputWays] = InputWays(
        url=(Way.FETCH_THERE,),
        kaggle=(Way.FETCH_THERE,),
        hf=(Way.FETCH_THERE,),
        path=(Way.DRIVE,),
        kaggle_credentials_there="the notebook downloads Kaggle inputs with the Colab secrets "
        "KAGGLE_USERNAME and KAGGLE_KEY (your kaggle.json's username and key): add both in "
        "Colab's Secrets panel (the key icon) and give the notebook access",
        secrets_there="Colab's Secrets panel (the key icon; give the notebook access)",
    )

    def __init__(
        self, home: Path, notify: Notify = lambda _m: None, meter: MeterFactory | None = None
    ) -> None:
        super().__init__(home, notify, meter)
        self._drive: Drive | None = None
        self._watch: Watch | None = None
        self.poll_s = settings.seconds("LAUNCH_COLAB_POLL_S", default=5.0)

    @property
    def drive(self) -> Drive:
        if self._drive is None:
            if not pydrive2_installed():
                raise TargetUnavailableError(
                    "the colab target needs pydrive2, which is not installed", hint=INSTALL_HINT
                )
            self._drive = Drive(self.home)
        return self._drive

    @property
    def watch(self) -> Watch:
        if self._watch is None:
            self._watch = Watch(self.drive, self.poll_s)
        return self._watch

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
        inputs = job_inputs(spec, type(self), self.notify)
        lowered = check_job(spec, opts, self.home, self.notify)
        bundle = job_bundle(spec, self.home, self.notify)
        packed: list[PackedDriveInput] = []
        for name, folder in inputs.local.items():
            p = pack_folder(self.home, Path(folder))
            packed.append(
                PackedDriveInput(name=name, archive=str(p.archive), file=p.file, sha256=p.sha256)
            )
        session_s = opts.session_hours * 3600
        return ColabPrepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            agent=agent_config(spec, inputs),
            secrets=list(spec.secrets),
            max_attempts=opts.max_sessions,
            more_attempts_hint=f"raise targets.colab.max_sessions (now {opts.max_sessions})",
            job=spec.name,
            notebook=NotebookJob(
                requirements=lowered.requirements,
                pip_options=lowered.pip_options,
                # the job's, and the credentials a Kaggle input is downloaded with
                secrets=list(dict.fromkeys([*spec.secrets, *inputs.fetch_only_env])),
                session_s=session_s,
                # the notebook's start and the last copy to Drive (a big checkpoint) must fit
                safety_s=min(600.0, max(1.0, 0.1 * session_s)),
                sync_s=opts.sync_seconds,
                lost_after_s=opts.lost_after_minutes * 60,
                packed=[(p.name, p.file, p.sha256) for p in packed],
            ),
            packed=packed,
            gpu=opts.gpu if spec.resources.gpu.count > 0 else None,
            keep=opts.keep,
            lost_after_s=opts.lost_after_minutes * 60,
            open_within_s=opts.open_within_hours * 3600,
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
        about = names.folder_description(prepared.run_id, n, home_key(self.home))
        folder = drive.create_folder(title, root, about)
        ledger.created(ticket, native_id=folder)
        state_sha = None
        if attempt.resume_from is not None:
            archive = self.home / "colab" / "state" / f"{title}.tar.gz"
            try:
                state_sha = state_archive(attempt.resume_from, list(attempt.resume_skip), archive)
                drive.upload(folder, names.STATE_FILE, archive, "application/gzip")
            finally:
                archive.unlink(missing_ok=True)
        job = SessionJob(
            **prepared.notebook.model_dump(),
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
        self._upload_inputs(prepared, root, ledger)
        job_json = job.model_dump_json(indent=1).encode()
        drive.upload(folder, names.JOB_FILE, job_json, "application/json")
        control = drive.upload(folder, names.CONTROL_FILE, _control("run"), "application/json")
        config = NotebookConfig(
            run_id=prepared.run_id,
            session=n,
            folder_title=title,
            folder_id=folder,
            session_s=prepared.notebook.session_s,
        )
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
            open_within_s=prepared.open_within_s,
            keep=prepared.keep,
        )

    def _upload_inputs(self, prepared: ColabPrepared, root: str, ledger: Ledger) -> None:
        """Each packed input folder into My Drive/launch/inputs, unless a file of that name (the
        content's digest) and size is there already: a cache later runs reuse, kept on Drive."""
        if not prepared.packed:
            return
        drive = self.drive
        found = [f for f in drive.children(root, title=names.INPUTS_TITLE) if f.is_folder]
        if found:
            box = min(found, key=lambda f: (f.modified_ns, f.id)).id
        else:
            box = drive.create_folder(names.INPUTS_TITLE, root, "input folders of `launch`")
        for p in prepared.packed:
            md5 = hashlib.md5(usedforsecurity=False)
            with Path(p.archive).open("rb") as src:
                while block := src.read(1 << 20):
                    md5.update(block)
            have = [f for f in drive.children(box, title=p.file) if not f.trashed]
            if any(f.md5 == md5.hexdigest() for f in have):
                self.notify(f"input '{p.name}' unchanged: reusing {p.file} in your Drive")
                continue
            for stale in have:  # the notebook reads by name: only the right bytes may bear it
                drive.trash(stale.id)
            ticket = ledger.intent("input", p.file, {"shared": True, "parent": box})
            sent = drive.upload(box, p.file, Path(p.archive), "application/gzip")
            ledger.created(ticket, native_id=sent.id)
            self.notify(f"uploaded input '{p.name}' to My Drive/launch/inputs/{p.file}")

    def describe(self, handle: ColabHandle) -> str:
        return f"Colab session {handle.attempt}: {handle.link}"

    # ---- watch (session.py reads the folder) ------------------------------------------------

    def status(self, handle: ColabHandle) -> TS:
        return self.watch.status(handle)

    def read_logs(self, handle: ColabHandle, cursor: int) -> tuple[list[LogLine], int]:
        try:
            log = self.watch.look(handle).run.get(agent_mod.LOG_FILE)
            if log is None or log.size <= cursor:
                return [], cursor
            chunk = self.drive.read_range(log.id, cursor, log.size - 1)
        except TargetError:
            return [], cursor  # read again next poll: the cursor did not move
        lines, used = parse_log_chunk(chunk)
        return lines, cursor + used

    def pull(self, handle: ColabHandle, dest: Path) -> PullResult:
        seen = self.watch.look(handle, fresh=True)
        if seen.gone or seen.run_id is None:
            return PullResult()
        tree = DriveTree(self.drive, seen.run_id, seen.manifest)
        return pull_tree(tree, dest, include=_pulled, meter=self.meter("pull from Drive"))

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
        seen = self.watch.look(h, fresh=True)
        if seen.gone:
            return
        if seen.status is None or seen.status.phase != "exited":
            self._control(h, "stop")  # a session still open in a tab stops its job
        why = ""
        if h.keep:
            why = "targets.colab.keep"
        elif keep_data:
            why = "its outputs were not all pulled"
        elif not self.watch.complete(h):
            why = "the notebook's last files had not all reached Drive"
        if why:
            self.drive.set_description(
                h.folder_id,
                names.folder_description(h.run_id, h.attempt, home_key(self.home), kept=True),
            )
            self.notify(f"kept Drive folder launch/{h.folder_title} ({why})")
            return
        self.drive.trash(h.folder_id)
        self.watch.forget(h)

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if kind == "input":
            return  # a packed input in My Drive/launch/inputs: a cache later runs reuse
        if kind != "folder":
            self.notify(f"colab: nothing to release for a {kind} ({native_id})")
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
        """Session folders this launch home made and did not keep (`launch gc` may trash one
        whose run it no longer knows); kept ones, and other homes' and machines', stay."""
        mine = home_key(self.home)
        try:
            found: list[tuple[str, str, str]] = []
            for f in self.drive.children(self._root()):
                run = names.run_of_title(f.title)
                owner = names.home_of_description(f.description)
                if run is not None and f.is_folder and owner == (mine, False):
                    found.append((f.id, run, "in Drive"))
            return found
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list the launch folder in Drive: {e.message}")
            return []


def _control(desired: str) -> bytes:
    return json.dumps({"desired": desired}).encode()


def _open_in_browser(link: str) -> None:
    """Open the link for a user at a terminal; never in scripts, CI or tests."""
    if settings.flag("LAUNCH_NO_BROWSER") or os.environ.get("CI") or not sys.stdout.isatty():
        return
    import webbrowser

    try:
        webbrowser.open(link, new=2)
    except webbrowser.Error:
        pass
