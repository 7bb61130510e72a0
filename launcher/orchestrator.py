"""Drives one run through its lifecycle; the only place that waits.

    start():      PENDING -> PREPARING -> (prepare) -> STARTING -> (submit, handle stored)
    supervise():  poll -> RUNNING -> stream logs, pull every sync interval -> PULLING
                  -> final pull -> cleanup -> SUCCEEDED | FAILED | CANCELLED

Targets never wait; this module owns every timeout, and writes each step to the store before it
moves on, so a launcher killed at any point leaves a record `launch gc` and `launch pull` can
finish from. Cleanup runs on every path out of `supervise`, Ctrl-C included; a second Ctrl-C
abandons it and says how to finish by hand.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from launcher.errors import LaunchError, RemoteRunLostError
from launcher.runs import Reporter, SilentReporter, StoreLedger, new_run_id, supervisor_alive
from launcher.state import FailureReason, ResourceState, RunHandle, RunRecord, RunStatus
from launcher.store import RunStore
from launcher.targets.base import Phase, Target, TargetStatus

# re-exported: callers import these with the orchestrator
__all__ = [
    "Orchestrator",
    "Reporter",
    "SilentReporter",
    "StoreLedger",
    "new_run_id",
    "outcome",
    "supervisor_alive",
]


_PHASE_STATUS: dict[Phase, RunStatus] = {
    Phase.QUEUED: RunStatus.PROVISIONING,
    Phase.PROVISIONING: RunStatus.PROVISIONING,
    Phase.UPLOADING: RunStatus.UPLOADING,
    Phase.STARTING: RunStatus.STARTING,
    Phase.RUNNING: RunStatus.RUNNING,
}
_PHASE_ORDER = [
    RunStatus.PROVISIONING,
    RunStatus.UPLOADING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
]

_FINISHED_AS: dict[Phase, tuple[RunStatus, FailureReason | None]] = {
    Phase.DONE: (RunStatus.SUCCEEDED, None),
    Phase.FAILED: (RunStatus.FAILED, FailureReason.WORKLOAD_EXITED_NONZERO),
    Phase.LOST: (RunStatus.FAILED, FailureReason.REMOTE_LOST),
}


def outcome(st: TargetStatus) -> tuple[RunStatus, FailureReason | None]:
    """How a finished target status ends the run."""
    if st.phase is Phase.STOPPED:
        if st.stop_reason == "time_limit":
            return RunStatus.FAILED, FailureReason.TIMED_OUT
        return RunStatus.CANCELLED, FailureReason.USER_CANCELLED
    return _FINISHED_AS[st.phase]


@dataclass
class Orchestrator:
    store: RunStore
    target: Target
    reporter: Reporter = field(default_factory=SilentReporter)
    poll_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    _cost_stopped: set[str] = field(default_factory=set[str], init=False)  # at max_cost_usd

    # ---- bookkeeping ------------------------------------------------------------------------

    def _move(self, run_id: str, new: RunStatus, message: str = "", **kw: Any) -> RunRecord:
        before = self.store.get(run_id)
        after = self.store.transition(
            run_id, expected=before.status, new=new, message=message, **kw
        )
        spent = (after.events[-1].at - before.events[-1].at).total_seconds()
        self.reporter.phase(new, before.status, spent)
        return after

    def _fail(self, run_id: str, reason: FailureReason, error: BaseException) -> None:
        record = self.store.get(run_id)
        if not record.status.is_terminal():
            message = error.message if isinstance(error, LaunchError) else repr(error)
            self._move(run_id, RunStatus.FAILED, message, failure_reason=reason)

    # ---- start ------------------------------------------------------------------------------

    def start(
        self,
        spec: Any,
        *,
        output_dir: Path,
        run_id: str | None = None,
        resume_checkpoints: Path | None = None,
        parent_id: str | None = None,
    ) -> RunRecord:
        """Prepare and submit. Returns once the job is started and its handle is stored."""
        run_id = run_id or new_run_id(spec.name)
        self.store.create_run(
            run_id=run_id,
            job=spec.name,
            target=self.target.name,
            spec_digest=spec.digest(),
            spec_path=str(spec.source_path),
            spec=spec.resolved_dict(),
            output_dir=str(output_dir),
            parent_id=parent_id,
        )
        self.store.update(run_id, supervisor_pid=os.getpid(), supervisor_host=socket.gethostname())
        self.reporter.note(f"run {run_id}: {spec.name} on {self.target.name} -> {output_dir}")
        self._move(run_id, RunStatus.PREPARING)
        try:
            prepared = self.target.prepare(spec, run_id, output_dir)
        except Exception as e:
            self._fail(run_id, FailureReason.PREPARE_FAILED, e)
            raise
        if resume_checkpoints is not None:
            prepared = prepared.model_copy(update={"resume_checkpoints": resume_checkpoints})
        self._move(run_id, RunStatus.PROVISIONING)  # submit asks the platform for a machine
        ledger = StoreLedger(self.store, run_id, self.target.name)
        try:
            handle = self.target.submit(prepared, ledger)
        except Exception as e:
            # whatever submit recorded before failing must still be freed
            try:
                self._release_recorded(run_id)
            finally:
                self._fail(run_id, FailureReason.SUBMIT_FAILED, e)
            raise
        self.store.update(run_id, handle=handle, price_per_hour=handle.price_per_hour)
        return self.store.get(run_id)

    def _release_recorded(self, run_id: str) -> None:
        """Free every unreleased ledger entry of a run through the target, then mark it."""
        for res in self.store.resources(run_id=run_id, unreleased_only=True):
            self.target.release_resource(res.kind, res.native_id, res.data)
            self.store.mark_resource(res.id, ResourceState.RELEASED)

    # ---- supervise --------------------------------------------------------------------------

    def supervise(
        self,
        run_id: str,
        *,
        sync_every: float = 300.0,
        time_limit_s: float | None = None,
        grace_s: float = 30.0,
    ) -> RunRecord:
        """Watch a started run to its end: logs, periodic pulls, final pull, cleanup.

        The agent enforces the job's time limit itself; `time_limit_s` here is the backstop for
        an agent that cannot (a hung machine): past it plus the grace period, the job is stopped.
        """
        record = self.store.get(run_id)
        assert record.handle is not None, "supervise() needs a submitted run"
        handle = record.handle
        output_dir = Path(record.output_dir)
        self.store.update(run_id, supervisor_pid=os.getpid(), supervisor_host=socket.gethostname())
        backstop = time_limit_s + grace_s + 60 if time_limit_s else None
        limits: dict[str, Any] = self.store.spec_of(run_id).get("limits") or {}
        cap = float(limits["max_cost_usd"]) if limits.get("max_cost_usd") is not None else None
        try:
            try:
                final = self._watch(
                    run_id, handle, output_dir, sync_every, backstop, grace_s, cap=cap
                )
            except KeyboardInterrupt:
                self.reporter.note(
                    "Ctrl-C: stopping the job (it saves a checkpoint first); "
                    "press Ctrl-C again to abandon cleanup"
                )
                handle = self._handle(run_id)
                self.target.cancel(handle)
                final = self._watch(run_id, handle, output_dir, sync_every, 0.0, grace_s)
            # advance() may have replaced the handle (a new machine after a pre-emption)
            handle = self._handle(run_id)
            self._finish(run_id, handle, output_dir, final)
        except KeyboardInterrupt:
            self.reporter.note(
                f"cleanup abandoned. The job may still hold resources: run `launch gc` to stop "
                f"and free them, then `launch pull {run_id}` to fetch its outputs."
            )
            raise
        except Exception as e:
            # any failure, ours included: free what is billed before the error goes up
            self._salvage(run_id, self._handle(run_id), output_dir, e)
            raise
        return self.store.get(run_id)

    def _handle(self, run_id: str) -> RunHandle:
        """The newest stored handle of a run (advance() may have replaced it)."""
        handle = self.store.get(run_id).handle
        assert handle is not None
        return handle

    def _watch(
        self,
        run_id: str,
        handle: RunHandle,
        output_dir: Path,
        sync_every: float,
        stop_after: float | None,
        grace_s: float,
        *,
        cap: float | None = None,
    ) -> TargetStatus:
        """Poll until the target reports the run finished. Past `stop_after` seconds of the job
        running, or once the run would cost more than `cap` USD by the end of a grace period,
        ask the job to stop; `grace_s` + 30 s after that, kill it.

        Only time the target reports the job RUNNING counts towards `stop_after`: a queue
        between chained Kaggle sessions or a new machine after a pre-emption is not the job's
        time, and the agent enforces the job's own limit across attempts."""
        cursor = 0
        last_sync = prev = self.clock()
        ran = 0.0
        stop_sent_at: float | None = None
        killed = False
        polls = 0
        ledger = StoreLedger(self.store, run_id, self.target.name)
        while True:
            advanced = self.target.advance(handle, ledger)
            if advanced is not None:
                handle = advanced
                self.store.update(run_id, handle=handle, price_per_hour=handle.price_per_hour)
            st = self.target.status(handle)
            lines, cursor = self.target.read_logs(handle, cursor)
            for line in lines:
                self.reporter.log(line)
            self._follow_phase(run_id, st)
            if st.finished:
                more, cursor = self.target.read_logs(handle, cursor)
                for line in more:
                    self.reporter.log(line)
                return st
            now = self.clock()
            if st.phase is Phase.RUNNING:
                ran += now - prev
            prev = now
            if now - last_sync >= sync_every:
                self.target.pull(handle, output_dir)
                last_sync = now
            if cap is not None and stop_sent_at is None and self._over_cap(run_id, cap, grace_s):
                self.target.cancel(handle)
                stop_sent_at = now
            if stop_after is not None and stop_sent_at is None and ran >= stop_after:
                if stop_after > 0:
                    self.reporter.note("the job outlived its time limit; stopping it")
                    self.target.cancel(handle)
                stop_sent_at = now
            if stop_sent_at is not None and not killed and now - stop_sent_at > grace_s + 30:
                self.reporter.note("the job did not stop within its grace period; killing it")
                self.target.kill(handle)
                killed = True
            # poll fast at first (short jobs, quick failures), then back off to poll_s
            time.sleep(min(self.poll_s, 0.05 * 1.5**polls))
            polls += 1

    def _over_cap(self, run_id: str, cap: float, grace_s: float) -> bool:
        """Would the run cost more than `cap` if asked to stop only after this poll? The margin
        is what the current machine costs over a grace period plus a minute (the stop, the
        final pull and the destroy), so the job ends in a checkpoint before the cap."""
        record = self.store.get(run_id)
        spent = self._cost(record)
        if spent is None or not record.price_per_hour:  # free machines never reach a cap
            return False
        margin = record.price_per_hour * Decimal(grace_s + 60) / 3600
        if spent + margin < Decimal(str(cap)):
            return False
        self._cost_stopped.add(run_id)
        self.reporter.note(
            f"the run has cost ${spent:.4f}; stopping it (with a checkpoint) before it passes "
            f"limits.max_cost_usd=${cap:g}"
        )
        return True

    def _follow_phase(self, run_id: str, st: TargetStatus) -> None:
        """Record the phase the target reports, moving forwards only."""
        want = _PHASE_STATUS.get(st.phase)
        if st.finished and st.phase is not Phase.LOST:
            want = RunStatus.RUNNING  # a job quicker than one poll still ran: record it
        current = self.store.get(run_id).status
        if (
            want is None
            or want is current
            or current not in _PHASE_ORDER
            or want not in _PHASE_ORDER
        ):
            return
        if _PHASE_ORDER.index(want) > _PHASE_ORDER.index(current):
            self._move(run_id, want)

    # ---- taking over a run whose launcher is gone --------------------------------------------

    def adopt(self, run_id: str) -> None:
        """This process now drives the run (after its launcher died)."""
        self.store.update(run_id, supervisor_pid=os.getpid(), supervisor_host=socket.gethostname())

    def finish(self, run_id: str, st: TargetStatus) -> RunRecord:
        """End a run whose job has finished: final pull, cleanup, terminal status."""
        record = self.store.get(run_id)
        assert record.handle is not None
        self._finish(run_id, record.handle, Path(record.output_dir), st)
        return self.store.get(run_id)

    def stop_and_finish(
        self,
        run_id: str,
        *,
        grace_s: float,
        reason: FailureReason | None = None,
        keep_data: bool = False,
    ) -> RunRecord:
        """Stop a running job (it checkpoints), then pull, clean up and end the run."""
        record = self.store.get(run_id)
        assert record.handle is not None
        output_dir = Path(record.output_dir)
        self.target.cancel(record.handle)
        st = self._watch(run_id, record.handle, output_dir, float("inf"), 0.0, grace_s)
        handle = self._handle(run_id)
        self._finish(run_id, handle, output_dir, st, reason=reason, keep_data=keep_data)
        return self.store.get(run_id)

    def abandon(self, run_id: str, reason: FailureReason) -> RunRecord:
        """End a run that never got a handle: free whatever its ledger recorded."""
        self._release_recorded(run_id)
        status = (
            RunStatus.CANCELLED if reason is FailureReason.USER_CANCELLED else RunStatus.FAILED
        )
        return self._move(run_id, status, "ended before its job started", failure_reason=reason)

    def _finish(
        self,
        run_id: str,
        handle: RunHandle,
        output_dir: Path,
        st: TargetStatus,
        *,
        reason: FailureReason | None = None,
        keep_data: bool = False,
    ) -> None:
        status, natural = outcome(st)
        reason = reason if reason is not None and status is not RunStatus.SUCCEEDED else natural
        if run_id in self._cost_stopped and status is not RunStatus.SUCCEEDED:
            status, reason = RunStatus.FAILED, FailureReason.COST_LIMIT
        record = self._move(run_id, RunStatus.PULLING, exit_code=st.exit_code)
        try:
            result = self.target.pull(handle, output_dir)
        except LaunchError as e:
            self.target.cleanup(handle, keep_data=True)
            StoreLedger(self.store, run_id, self.target.name).release_all()
            self._move(
                run_id,
                RunStatus.FAILED,
                f"pull failed: {e.message}",
                failure_reason=FailureReason.PULL_FAILED,
            )
            raise
        complete = not result.changed_during_copy
        keep = keep_data or not complete or status is not RunStatus.SUCCEEDED
        self.target.cleanup(handle, keep_data=keep)
        StoreLedger(self.store, run_id, self.target.name).release_all()
        message = st.message if status is not RunStatus.SUCCEEDED else ""
        if reason is FailureReason.COST_LIMIT:
            message = "stopped before it cost more than limits.max_cost_usd"
        if st.phase is Phase.LOST:
            message = str(RemoteRunLostError(st.message or "the job vanished"))
        try:  # what the platform counted (quota hours): worth recording, never worth failing for
            usage = self.target.usage(handle)
        except LaunchError as e:
            self.reporter.note(f"could not read what the run used on {self.target.name}: {e}")
            usage = {}
        self.store.update(run_id, cost_usd=self._cost(record), usage=usage)
        self._move(run_id, status, message, failure_reason=reason)

    @staticmethod
    def _cost(record: RunRecord) -> Decimal | None:
        """$/h times the time resources were held: from submit until now (the end). A handle
        that says when its machine began to bill adds what the machines before it cost."""
        if record.price_per_hour is None:
            return None
        if record.handle is not None and record.handle.billed_since is not None:
            return record.handle.cost_now(record.price_per_hour)
        held = sum(
            secs
            for status, secs in record.phase_durations()
            if status not in (RunStatus.PENDING, RunStatus.PREPARING)
        )
        return (record.price_per_hour * Decimal(held) / 3600).quantize(Decimal("0.000001"))

    def _salvage(
        self, run_id: str, handle: RunHandle, output_dir: Path, error: BaseException
    ) -> None:
        """Something broke while watching: free what is billed, keep what is not pulled."""
        try:
            self.target.cancel(handle)
            self.target.pull(handle, output_dir)
        except Exception as e:  # noqa: BLE001 - best effort; the cleanup below must still run
            self.reporter.note(f"could not stop/pull before cleanup: {e}")
        try:
            self.target.cleanup(handle, keep_data=True)
            StoreLedger(self.store, run_id, self.target.name).release_all()
        finally:
            self._fail(run_id, FailureReason.REMOTE_LOST, error)
