"""The public Python API of `launch`. The CLI is a thin layer over these functions.

Everything takes a `Session`: where the store lives and who hears progress (httpie's injectable
`Environment`; there is no global state). Functions raise `LaunchError` subclasses only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import LaunchError, RunNotFoundError, SpecProblem, TargetUnavailableError
from launcher.orchestrator import (
    Orchestrator,
    Reporter,
    SilentReporter,
    new_run_id,
    supervisor_alive,
)
from launcher.runs import process_start
from launcher.signals import signals_interrupt
from launcher.state import FailureReason, ResourceState, RunRecord, RunStatus, StopReason
from launcher.store import RunStore, default_home
from launcher.sync import PullResult
from launcher.targets import load_target_class
from launcher.targets.base import AnyTarget, LogLine, Phase, Plan, TargetStatus

if TYPE_CHECKING:
    from launcher.spec import JobSpec


@dataclass
class Session:
    """Where runs are stored and who is told about progress."""

    home: Path = field(default_factory=default_home)
    reporter: Reporter = field(default_factory=SilentReporter)

    @cached_property
    def store(self) -> RunStore:
        return RunStore(self.home)

    def target(self, name: str) -> AnyTarget:
        return load_target_class(name)(self.home, self.reporter.note, meter=self.reporter.meter)

    def orchestrator(self, target: str) -> Orchestrator:
        return Orchestrator(self.store, self.target(target), self.reporter)


# ---- run ------------------------------------------------------------------------------------


def run(
    session: Session,
    spec_path: Path,
    *,
    target: str = "local",
    profile: str | None = None,
    overrides: Sequence[str] = (),
    output_dir: Path | None = None,
    detach: bool = False,
    resume_from: str | None = None,
    allow_outside: bool = False,
) -> RunRecord:
    """Validate, prepare, submit and (unless `detach`) supervise a run to its end.

    Ctrl-C, SIGTERM and SIGHUP stop the job with a checkpoint, pull and free everything; a
    second one abandons that (see launcher/signals.py)."""
    from launcher.spec import load_spec

    spec = load_spec(spec_path, profile=profile, overrides=overrides, allow_outside=allow_outside)
    orch = session.orchestrator(target)
    parent: RunRecord | None = None
    resume_dir: Path | None = None
    if resume_from:
        parent = session.store.resolve(resume_from)
        resume_dir = Path(parent.output_dir) / "checkpoints"  # orch.start checks it holds one
    run_id = new_run_id(spec.name)
    out = (output_dir or Path.cwd() / "runs" / run_id).resolve()
    with signals_interrupt():
        record = orch.start(
            spec,
            run_id=run_id,
            output_dir=out,
            resume_checkpoints=resume_dir,
            parent_id=parent.id if parent else None,
        )
        if record.status.is_terminal():  # stopped before it started
            return record
        if detach:
            _spawn_supervisor(session, record.id)
            return session.store.get(record.id)
        return orch.supervise(record.id)


def plan(
    session: Session,
    spec_path: Path,
    *,
    target: str = "local",
    profile: str | None = None,
    overrides: Sequence[str] = (),
    allow_outside: bool = False,
) -> Plan:
    """Where the job would run on `target` and at what price; creates and spends nothing.

    Raises for a bad spec, a target that cannot be used here (missing credentials or extra) or an
    unreachable platform. A job that cannot run is a Plan with `problems`.
    """
    from launcher.spec import load_spec

    spec = load_spec(spec_path, profile=profile, overrides=overrides, allow_outside=allow_outside)
    return _plan_on(session, spec, target)


def plan_all(
    session: Session,
    spec_path: Path,
    *,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    allow_outside: bool = False,
) -> list[Plan]:
    """One plan per target this version offers, to compare platforms side by side. A target that
    cannot be used here (no credentials, no extra, platform down) is a Plan whose problem says
    why, so one missing account does not hide the others."""
    from launcher.spec import load_spec
    from launcher.targets import TARGETS

    spec = load_spec(spec_path, profile=profile, overrides=overrides, allow_outside=allow_outside)
    plans: list[Plan] = []
    for name, entry in TARGETS.items():
        if not entry.available:
            continue
        try:
            plans.append(_plan_on(session, spec, name))
        except LaunchError as e:
            plans.append(Plan(target=name, problems=[e.message], notes=[e.hint] if e.hint else []))
    return plans


def _plan_on(session: Session, spec: JobSpec, target: str) -> Plan:
    tgt = session.target(target)
    check = tgt.check()
    if not check.ok:
        raise TargetUnavailableError(
            f"the {target} target cannot be used here: " + "; ".join(check.problems),
            hint="; ".join(check.hints) or None,
        )
    result = tgt.plan(spec)
    # what the platform does differently from running the job's image as it is
    result.notes.extend(reason for reason in tgt.unsupported.values())
    from launcher.inputs import probe_sizes, resolve

    inputs = resolve(spec, tgt.input_ways, target)  # the same resolution `prepare` makes
    probe_sizes(inputs)
    result.notes.extend(f"input {d.shown}" for d in inputs.deliveries)
    result.problems.extend(inputs.problems)
    result.notes.extend(inputs.hints)
    return result


def _spawn_supervisor(session: Session, run_id: str) -> None:
    log_dir = session.home / "supervisors"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{run_id}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "_supervise", run_id],
            env=dict(os.environ, LAUNCH_HOME=str(session.home)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    session.store.update(
        run_id, supervisor_pid=proc.pid, supervisor_start=process_start(proc.pid) or ""
    )


def supervise(session: Session, run_ref: str) -> RunRecord:
    """Drive a submitted run to its end (the background process of a detached run)."""
    record = session.store.resolve(run_ref)
    with signals_interrupt():
        return session.orchestrator(record.target).supervise(record.id)


# ---- look -----------------------------------------------------------------------------------


def list_runs(session: Session, *, limit: int = 50) -> list[RunRecord]:
    return session.store.list_runs(limit=limit)


def status(
    session: Session, run_ref: str, *, refresh: bool = False
) -> tuple[RunRecord, TargetStatus | None]:
    """The stored record; with `refresh`, also one live probe of the target.

    A run whose launcher died and whose job has finished is finished here (pulled, cleaned up),
    so the store converges on the truth.
    """
    record = session.store.resolve(run_ref)
    if not refresh or record.status.is_terminal() or record.handle is None:
        return record, None
    orch = session.orchestrator(record.target)
    live = orch.target.status(orch.target.load_handle(record.handle))
    if live.finished and not supervisor_alive(record):
        orch.adopt(record.id)
        orch.finish(record.id, live)
        record = session.store.get(record.id)
    return record, live


def logs(session: Session, run_ref: str, *, follow: bool = False) -> Iterator[LogLine]:
    """The job's log: live from the target while an attempt runs (with `follow`, from one
    attempt to the next until the run ends), else from the pulled copies of every attempt."""
    from launcher.attempts import attempt_logs

    record = session.store.resolve(run_ref)
    while follow and record.handle is None and not record.status.is_terminal():
        time.sleep(0.5)  # still being prepared: the log starts once the job is submitted
        record = session.store.get(record.id)
    if record.handle is not None and not record.status.is_terminal():
        target = session.target(record.target)
        shown = 0
        while record.handle is not None and record.handle.attempt > shown:
            shown = record.handle.attempt
            yield from target.logs(target.load_handle(record.handle), follow=follow)
            if not follow:
                return
            while True:  # the next attempt, or the end of the run
                record = session.store.get(record.id)
                if record.status.is_terminal() or (
                    record.handle is not None and record.handle.attempt > shown
                ):
                    break
                time.sleep(0.5)
        return
    files = attempt_logs(Path(record.output_dir))
    if not files and not record.status.is_terminal():
        return  # being prepared: there is no log yet, which is no error (`-f` waits for it)
    if not files:
        raise LaunchError(
            f"no log for run {record.id} yet",
            hint=f"`launch pull {record.id}` fetches it" if record.handle else None,
        )
    yield from _read_log_files(files)


def _read_log_files(files: list[Path]) -> Iterator[LogLine]:
    from launcher import agent as agent_mod

    for path in files:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            for raw in f:
                parsed = agent_mod.parse_log_line(raw.rstrip("\n"))
                if parsed:
                    yield LogLine(at=parsed[0], stream=parsed[1], text=parsed[2])


def pull(
    session: Session, run_ref: str, *, dest: Path | None = None
) -> tuple[RunRecord, PullResult]:
    record = session.store.resolve(run_ref)
    if record.handle is None:  # nothing was started (yet): an empty pull, not an error
        return record, PullResult()
    target = session.target(record.target)
    result = target.pull(target.load_handle(record.handle), dest or Path(record.output_dir))
    if not result.changed_during_copy:  # all of it is home: a machine kept for it may go
        for res in session.store.resources(run_id=record.id, unreleased_only=True):
            if res.state is ResourceState.KEPT:
                session.store.mark_resource(res.id, ResourceState.CREATED)
    return record, result


def report(session: Session, *, job: str | None = None, limit: int = 1000) -> list[Any]:
    """Per (job, target): runs, successes, median seconds per stage, cost. See report.py."""
    from launcher.report import build

    records = session.store.list_runs(limit=limit)
    return build(r for r in records if job is None or r.job == job)


# ---- stop -----------------------------------------------------------------------------------


def cancel(session: Session, run_ref: str, *, wait: bool = True) -> RunRecord:
    """Ask a run to stop (it checkpoints). The request is stored with the run, so the launcher
    driving it acts on it in any phase; when that launcher is gone, finish the run here."""
    record = session.store.resolve(run_ref)
    if record.status.is_terminal():
        return record
    session.store.request_stop(record.id, StopReason.CANCEL)
    if supervisor_alive(record):
        if wait:
            grace = session.store.policy_of(record.id).grace_s
            _wait_terminal(session, record.id, grace + 120)
        return session.store.get(record.id)
    orch = session.orchestrator(record.target)
    orch.adopt(record.id)
    if record.handle is None:
        return orch.abandon(record.id, FailureReason.USER_CANCELLED)
    return orch.stop_and_finish(record.id, StopReason.CANCEL)


def _wait_terminal(session: Session, run_id: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if session.store.get(run_id).status.is_terminal():
            return
        time.sleep(0.3)


# ---- specs and images -------------------------------------------------------------------------


def validate(paths: Sequence[Path]) -> list[SpecProblem]:
    from launcher.spec import validate_files

    return validate_files(paths)


def schema() -> dict[str, Any]:
    from launcher.spec import json_schema

    return json_schema()


def build_image(
    session: Session,
    name: str,
    *,
    project_root: Path,
    base_image: str | None = None,
    requirements: str = "requirements.txt",
    force: bool = False,
) -> Any:
    from launcher.images import ensure_image
    from launcher.targets.local.docker_client import DockerClient

    return ensure_image(
        DockerClient(),
        project_root,
        name,
        base_image=base_image,
        requirements=requirements,
        force=force,
        on_line=session.reporter.note,
    )


__all__ = [
    "Session",
    "plan",
    "plan_all",
    "run",
    "supervise",
    "list_runs",
    "status",
    "logs",
    "pull",
    "cancel",
    "validate",
    "schema",
    "build_image",
    "RunNotFoundError",
    "RunStatus",
    "Phase",
]
