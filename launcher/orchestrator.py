"""Drives one run through its attempts; the only place that waits.

    start():      PENDING -> PREPARING -> (prepare; stored) -> PROVISIONING -> (submit attempt 1)
    supervise():  poll -> RUNNING -> stream logs, pull every sync interval; then either
                  the attempt ended early (pre-empted, lost) and another is allowed:
                      PREEMPTED -> pull, keep its log, put metrics back at the newest checkpoint,
                      free it -> PROVISIONING -> (submit the next attempt from that checkpoint)
                  or the run ends: PULLING -> final pull -> cleanup -> SUCCEEDED|FAILED|CANCELLED

Stops are requests stored with the run (`RunStore.request_stop`): `launch cancel` from any
process, the cost cap, the time-limit backstop, `launch gc` and a signal to this launcher all ask
the same way, and the loop acts on the stored request at its next poll. Every step is written to
the store before the next one starts, so a launcher killed at any point leaves a record that
`launch gc` and `launch pull` can finish from. Cleanup runs on every path out of `supervise`; a
second signal abandons it and says how to finish by hand.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from launcher.attempts import (
    StreamedLog,
    has_checkpoint,
    keep_attempt_log,
    restore_metrics,
    resume_checkpoint,
)
from launcher.errors import LaunchError, NoCapacityError, NothingToResumeError, TargetError
from launcher.outcomes import attempt_end, outcome, run_cost, run_policy, run_usage
from launcher.runs import (
    Reporter,
    SilentReporter,
    StoreLedger,
    new_run_id,
    process_start,
    supervisor_alive,
)
from launcher.signals import describe
from launcher.state import (
    AttemptEnd,
    FailureReason,
    ResourceState,
    RunPolicy,
    RunRecord,
    RunStatus,
    StopReason,
)
from launcher.store import RunStore
from launcher.sync import PullResult
from launcher.targets.base import NOT_STARTED, AnyTarget, AttemptSpec, Phase, TargetStatus

if TYPE_CHECKING:
    from launcher.spec import JobSpec

# re-exported: callers import these with the orchestrator
__all__ = [
    "Orchestrator",
    "Reporter",
    "SilentReporter",
    "StoreLedger",
    "new_run_id",
    "supervisor_alive",
]

_PHASE_STATUS: dict[Phase, RunStatus] = {
    Phase.QUEUED: RunStatus.PROVISIONING,
    Phase.PROVISIONING: RunStatus.PROVISIONING,
    Phase.UPLOADING: RunStatus.UPLOADING,
    Phase.STARTING: RunStatus.STARTING,
    Phase.RUNNING: RunStatus.RUNNING,
}
_PHASE_ORDER = [RunStatus.PROVISIONING, RunStatus.UPLOADING, RunStatus.STARTING, RunStatus.RUNNING]
_EARLY = frozenset({Phase.PREEMPTED, Phase.LOST})


class PullFailedError(TargetError):
    """The final pull of an attempt failed (its machine was freed, its data kept where the
    target can keep it)."""


def _foreign(run_id: str) -> LaunchError:
    return LaunchError(
        f"run {run_id} was recorded by another version of launch, which this one cannot drive",
        hint="finish it with the version that started it, or free its machine on the platform",
    )


def _text(error: BaseException) -> str:
    if isinstance(error, LaunchError):
        return error.message
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted ({describe(error)})"
    return repr(error)


@dataclass
class _Follow:
    """How far this process has streamed one attempt's log: a second `_watch` of the attempt
    (after the first Ctrl-C) goes on from there instead of printing it all again."""

    cursor: int = 0
    streamed: StreamedLog = field(default_factory=StreamedLog)


@dataclass
class Orchestrator:
    store: RunStore
    target: AnyTarget
    reporter: Reporter = field(default_factory=SilentReporter)
    poll_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # (run id, attempt) -> how far its log was streamed here
    _follows: dict[tuple[str, int], _Follow] = field(
        default_factory=dict[tuple[str, int], _Follow], init=False
    )

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
        if not self.store.get(run_id).status.is_terminal():
            self._end_run(run_id, RunStatus.FAILED, reason, _text(error))

    def _end_run(
        self, run_id: str, status: RunStatus, reason: FailureReason | None, message: str
    ) -> RunRecord:
        record = self.store.get(run_id)
        self.store.update(run_id, cost_usd=run_cost(record), usage=run_usage(record))
        return self._move(run_id, status, message, failure_reason=reason)

    def _claim(self, run_id: str) -> None:
        """This process drives the run from now on (`launch gc` checks that it lives)."""
        self.store.update(
            run_id,
            supervisor_pid=os.getpid(),
            supervisor_host=socket.gethostname(),
            supervisor_start=process_start(os.getpid()) or "",
        )

    adopt = _claim  # a run whose launcher died, taken over by `launch cancel`, `gc`, `status`

    def _ledger(self, run_id: str, attempt: int) -> StoreLedger:
        return StoreLedger(self.store, run_id, self.target.name, attempt)

    def _prepared(self, run_id: str) -> Any:
        data = self.store.prepared_of(run_id)
        if data is None:  # recorded by a launcher older than attempts
            raise _foreign(run_id)
        try:
            return self.target.load_prepared(data)
        except ValidationError as e:
            raise _foreign(run_id) from e

    def _handle(self, run_id: str) -> Any:
        stored = self.store.get(run_id).handle
        assert stored is not None, f"run {run_id} has no attempt"
        try:
            return self.target.load_handle(stored)
        except ValidationError as e:
            raise _foreign(run_id) from e

    def _store_handle(self, run_id: str, handle: Any) -> None:
        self.store.update(
            run_id, handle=self.target.store_handle(handle), price_per_hour=handle.price_per_hour
        )
        self.store.update_attempt(
            run_id,
            handle.attempt,
            where=self.target.describe(handle),
            price_per_hour=handle.price_per_hour,
        )

    def _release_recorded(self, run_id: str, attempt: int | None = None) -> None:
        """Free unreleased ledger entries through the target (no handle needed), then mark them.
        While the run has a machine KEPT for outputs that did not come home, nothing of it is
        released: a target may free by the run's label, which would take the kept one along."""
        unreleased = self.store.resources(run_id=run_id, unreleased_only=True)
        if any(res.state is ResourceState.KEPT for res in unreleased):
            return
        for res in unreleased:
            if attempt is not None and res.attempt != attempt:
                continue
            self.target.release_resource(res.kind, res.native_id, res.data)
            self.store.mark_resource(res.id, ResourceState.RELEASED)

    # ---- start ------------------------------------------------------------------------------

    def start(
        self,
        spec: JobSpec,
        *,
        output_dir: Path,
        run_id: str | None = None,
        resume_checkpoints: Path | None = None,
        parent_id: str | None = None,
    ) -> RunRecord:
        """Prepare and submit the first attempt. Returns once its handle is stored (or the run
        was stopped before it started).

        Raises:
            NothingToResumeError: `resume_checkpoints` holds no complete checkpoint; nothing
                is recorded or rented.
        """
        if resume_checkpoints is not None and not has_checkpoint(resume_checkpoints):
            # an error, not a fresh start: the user asked to continue, believing the work so
            # far saved; redoing it unasked costs them the hours (and money) they meant to keep
            of = f"run {parent_id}" if parent_id else str(resume_checkpoints)
            pull = (
                f"`launch pull {parent_id}` fetches them if the job wrote any; "
                if parent_id
                else ""
            )
            raise NothingToResumeError(
                f"nothing to resume from: {of} has no complete checkpoint in {resume_checkpoints}",
                hint=pull + "without --resume-from the job starts from the beginning",
            )
        run_id = run_id or new_run_id(spec.name)
        policy = run_policy(spec)
        self.store.create_run(
            run_id=run_id,
            job=spec.name,
            target=self.target.name,
            spec_digest=spec.digest(),
            spec_path=str(spec.source_path),
            spec=spec.resolved_dict(),
            output_dir=str(output_dir),
            parent_id=parent_id,
            policy=policy,
        )
        self._claim(run_id)
        self.reporter.note(f"run {run_id}: {spec.name} on {self.target.name} -> {output_dir}")
        self._move(run_id, RunStatus.PREPARING)
        try:
            prepared = self.target.prepare(spec, run_id, output_dir)
        except KeyboardInterrupt as e:
            self._end_run(run_id, RunStatus.CANCELLED, FailureReason.USER_CANCELLED, _text(e))
            raise
        except Exception as e:
            self._fail(run_id, FailureReason.PREPARE_FAILED, e)
            raise
        self.store.update(run_id, prepared=prepared)
        if self.store.stop_request(run_id) is not None:  # `launch cancel` while we prepared
            self._end_run(
                run_id, RunStatus.CANCELLED, FailureReason.USER_CANCELLED, "stopped before start"
            )
            return self.store.get(run_id)
        first = AttemptSpec(
            number=1, resume_from=resume_checkpoints, time_left_s=policy.time_limit_s
        )
        self._submit(run_id, prepared, first, None)
        return self.store.get(run_id)

    def _submit(self, run_id: str, prepared: Any, attempt: AttemptSpec, previous: Any) -> None:
        """Start one attempt; on any failure free what it recorded and end the run."""
        self._move(run_id, RunStatus.PROVISIONING)
        self.store.begin_attempt(run_id, attempt.number, self.target.name)
        ledger = self._ledger(run_id, attempt.number)
        try:
            handle = self.target.submit(prepared, ledger, attempt, previous)
        except BaseException as e:
            try:  # whatever submit recorded before failing must still be freed
                self._release_recorded(run_id, attempt.number)
            finally:
                self.store.end_attempt(
                    run_id, attempt.number, AttemptEnd.SUBMIT_FAILED, message=_text(e)
                )
                if isinstance(e, KeyboardInterrupt):
                    self._end_run(
                        run_id, RunStatus.CANCELLED, FailureReason.USER_CANCELLED, _text(e)
                    )
                else:
                    no_room = isinstance(e, NoCapacityError)
                    why = FailureReason.NO_CAPACITY if no_room else FailureReason.SUBMIT_FAILED
                    self._fail(run_id, why, e)
            raise
        self._store_handle(run_id, handle)

    # ---- supervise --------------------------------------------------------------------------

    def supervise(self, run_id: str) -> RunRecord:
        """Watch a started run to its end: logs, periodic pulls, further attempts, final pull,
        cleanup. The first signal (Ctrl-C, SIGTERM, SIGHUP) stops the job with a checkpoint and
        finishes the run; a second one abandons that."""
        self._claim(run_id)
        interrupted = False
        try:
            while not self.store.get(run_id).status.is_terminal():
                try:
                    st, streamed = self._watch(run_id)
                    if not self._after(run_id, st, streamed):
                        break
                except KeyboardInterrupt as e:
                    if interrupted:
                        raise
                    interrupted = True
                    how = describe(e)
                    self.reporter.note(
                        f"{how}: stopping the job (it saves a checkpoint first); "
                        f"{how} again abandons the cleanup"
                    )
                    self.store.request_stop(run_id, StopReason.INTERRUPT)
        except KeyboardInterrupt:
            self.reporter.note(
                f"cleanup abandoned. The job may still hold resources: run `launch gc` to stop "
                f"and free them, then `launch pull {run_id}` to fetch its outputs."
            )
            raise
        except Exception as e:
            # any failure, ours included: free what is billed before the error goes up
            self._salvage(run_id, e)
            raise
        return self.store.get(run_id)

    def _watch(self, run_id: str, *, show_logs: bool = True) -> tuple[TargetStatus, StreamedLog]:
        """Poll the current attempt until it has ended. Acts on stop requests: asks the job to
        stop once (a job that has not started yet is simply not started), and kills it if it
        has not stopped a grace period + 30 s later. Periodic pulls, the cost cap and the
        time-limit backstop happen here too."""
        record = self.store.get(run_id)
        policy = self.store.policy_of(run_id)
        prepared = self._prepared(run_id)
        handle = self._handle(run_id)
        n = handle.attempt
        out = Path(record.output_dir)
        ledger = self._ledger(run_id, n)
        follow = self._follows.setdefault((run_id, n), _Follow())
        streamed, cursor = follow.streamed, follow.cursor
        ran_before = sum(a.ran_s for a in record.attempts if a.number != n)
        ran = next((a.ran_s for a in record.attempts if a.number == n), 0.0)
        last_sync = prev = self.clock()
        stop_sent_at: float | None = None
        stop_told = False  # the target took the stop request (a refused one is asked again)
        killed = False
        polls = 0
        said = ""
        while True:
            stop = self.store.stop_request(run_id)
            if stop is None:
                advanced = self.target.advance(prepared, handle, ledger)
                if advanced is not None:
                    handle = advanced
                    self._store_handle(run_id, handle)
            st = self.target.status(handle)
            cursor = follow.cursor = self._stream(handle, cursor, streamed, show_logs)
            self._follow_phase(run_id, st)
            if st.message != said and not st.finished:  # e.g. "waiting for you to open <link>"
                said = st.message
                self.store.update(run_id, message=said)
            now = self.clock()
            if st.phase is Phase.RUNNING:
                ran += now - prev
            prev = now
            if st.finished:
                follow.cursor = self._stream(handle, cursor, streamed, show_logs)
                self.store.update_attempt(run_id, n, ran_s=ran)
                return st, streamed
            if stop is not None and not stop_told:
                first = stop_sent_at is None
                stop_sent_at = now if stop_sent_at is None else stop_sent_at
                stop_told = self._tell(self.target.cancel, handle, "ask the job to stop", first)
                if st.phase in NOT_STARTED:  # nothing runs yet that could save a checkpoint
                    self.store.update_attempt(run_id, n, ran_s=ran)
                    gone = TargetStatus(
                        phase=Phase.STOPPED, message="stopped before the job started"
                    )
                    return gone, streamed
            if now - last_sync >= policy.sync_every_s:
                try:
                    self.target.pull(handle, out)
                except LaunchError as e:  # a platform briefly out of reach: the next one will do
                    self.reporter.note(f"could not pull this time: {e.message}")
                self.store.update_attempt(run_id, n, ran_s=ran)
                last_sync = now
            if stop is None:
                self._check_limits(run_id, policy, ran_before + ran)
            if (
                stop_sent_at is not None
                and not killed
                and now - stop_sent_at > policy.grace_s + 30
            ):
                self.reporter.note("the job did not stop within its grace period; killing it")
                self._tell(self.target.kill, handle, "kill the job", True)
                killed = True
            if stop_sent_at is not None and now - stop_sent_at > policy.grace_s + 90:
                # a kill changed nothing either (a platform that no longer answers): stop
                # waiting; the cleanup that follows frees the machine all the same
                self.store.update_attempt(run_id, n, ran_s=ran)
                gave_up = TargetStatus(phase=Phase.LOST, message="it did not stop when asked")
                return gave_up, streamed
            # poll fast at first (short jobs, quick failures), then back off to poll_s
            self.sleep(min(self.poll_s, 0.05 * 1.5**polls))
            polls += 1

    def _tell(self, call: Callable[[Any], None], handle: Any, what: str, say: bool) -> bool:
        """Run a stop or kill; one that fails is said (once) and asked again at the next poll,
        and the grace/kill/give-up backstop below still applies: never a reason to abandon the
        run with its machine left running."""
        try:
            call(handle)
        except LaunchError as e:
            if say:
                self.reporter.note(f"could not {what} yet: {e.message}; trying again")
            return False
        return True

    def _stream(self, handle: Any, cursor: int, streamed: StreamedLog, show: bool) -> int:
        lines, cursor = self.target.read_logs(handle, cursor)
        for line in lines:
            streamed.add(line)
            if show:
                self.reporter.log(line)
        return cursor

    def _check_limits(self, run_id: str, policy: RunPolicy, ran_s: float) -> None:
        """Ask the job to stop past the time-limit backstop, or before the cost cap.

        The agent enforces the job's time limit itself; this backstop is for an agent that
        cannot (a hung machine): past the limit plus the grace period and a minute. Only time
        the job was seen RUNNING counts, over every attempt. The cost margin is what the current
        machine costs over a grace period plus a minute (the stop, the final pull, the destroy),
        so the job ends in a checkpoint before the cap."""
        if policy.time_limit_s is not None and ran_s >= policy.time_limit_s + policy.grace_s + 60:
            self.reporter.note("the job outlived its time limit; stopping it")
            self.store.request_stop(run_id, StopReason.TIME_LIMIT)
            return
        cap = policy.max_cost_usd
        record = self.store.get(run_id)
        spent = run_cost(record)
        if cap is None or spent is None or not record.price_per_hour:
            return  # free machines never reach a cap
        margin = record.price_per_hour * Decimal(policy.grace_s + 60) / 3600
        if spent + margin >= cap:
            self.reporter.note(
                f"the run has cost ${spent:.4f}; stopping it (with a checkpoint) before it "
                f"passes limits.max_cost_usd=${cap:g}"
            )
            self.store.request_stop(run_id, StopReason.COST_LIMIT)

    def _follow_phase(self, run_id: str, st: TargetStatus) -> None:
        """Record the phase the target reports, moving forwards only."""
        want = _PHASE_STATUS.get(st.phase)
        if st.phase in (Phase.DONE, Phase.FAILED, Phase.STOPPED):
            want = RunStatus.RUNNING  # a job quicker than one poll still ran: record it
        current = self.store.get(run_id).status
        if want is None or current not in _PHASE_ORDER or want not in _PHASE_ORDER:
            return
        if _PHASE_ORDER.index(want) > _PHASE_ORDER.index(current):
            self._move(run_id, want)

    # ---- between attempts, and the end ------------------------------------------------------

    def _after(self, run_id: str, st: TargetStatus, streamed: StreamedLog) -> bool:
        """The attempt has ended: start the next one (True) or end the run (False)."""
        record = self.store.get(run_id)
        if st.phase not in _EARLY or record.stop_reason is not None:
            self._finish(run_id, st, streamed)
            return False
        prepared = self._prepared(run_id)
        policy = self.store.policy_of(run_id)
        n = record.attempt
        limit = policy.max_attempts or prepared.max_attempts
        left = None
        if policy.time_limit_s is not None:
            left = policy.time_limit_s - sum(a.ran_s for a in record.attempts)
        why_not = None
        if n >= limit:
            hint = prepared.more_attempts_hint or "limits.max_attempts allows more"
            why_not = f"it used {n} of {limit} attempt(s) ({hint})"
        elif left is not None and left <= policy.grace_s:
            why_not = "the job used its time limit (limits.max_hours)"
        if why_not is not None:
            self._finish(run_id, st, streamed, why_not=why_not)
            return False
        handle = self._handle(run_id)
        out = Path(record.output_dir)
        self._move(run_id, RunStatus.PREEMPTED, st.message)
        self._close_attempt(run_id, handle, st, streamed, keep_log=True)
        _restored, skip = restore_metrics(out)
        # `out` is a run folder: ask its checkpoints/ alone, never the folder as a whole (read
        # that way, one without checkpoints/ looked like a bare checkpoints folder and the next
        # attempt "resumed" from its logs/; issue 20, item 11)
        checkpoint = resume_checkpoint(out, skip)
        resume = out if checkpoint is not None else None
        start = (
            f"from checkpoint {checkpoint}"
            if checkpoint is not None
            else "from the start (no checkpoint was pulled)"
        )
        self.reporter.note(
            f"attempt {n} ended: {st.message or st.phase.value}; starting attempt {n + 1} "
            f"of {limit} {start}"
        )
        self.sleep(min(60.0, policy.attempt_backoff_s * 2 ** (n - 1)))
        if self.store.stop_request(run_id) is not None:  # asked meanwhile: rent nothing more
            status, reason, message = outcome(st, self.store.get(run_id))
            self._end_run(run_id, status, reason, message)
            return False
        nxt = AttemptSpec(number=n + 1, resume_from=resume, resume_skip=skip, time_left_s=left)
        try:
            self._submit(run_id, prepared, nxt, handle)
        except LaunchError as e:  # the run has ended; say why it could not go on
            ended = st.message or f"attempt {n} ended"
            self.store.update(run_id, message=f"{ended}; could not start attempt {n + 1}: {e}")
            return False
        return True

    def _finish(
        self,
        run_id: str,
        st: TargetStatus,
        streamed: StreamedLog,
        *,
        why_not: str | None = None,
    ) -> None:
        """End the run: final pull, cleanup, terminal status. Safe to run again on a run left
        in PULLING (a launcher killed or interrupted during its final pull)."""
        record = self.store.get(run_id)
        status, reason, message = outcome(st, record, why_not)
        handle = self._handle(run_id)
        if record.status is not RunStatus.PULLING:
            self._move(run_id, RunStatus.PULLING, exit_code=st.exit_code)
        try:  # a pull that got everything leaves nothing worth keeping on the machine
            self._close_attempt(run_id, handle, st, streamed, keep_log=False, final=True)
        except PullFailedError as e:
            self._release_leftovers(run_id)
            self._end_run(run_id, RunStatus.FAILED, FailureReason.PULL_FAILED, e.message)
            raise
        self._release_leftovers(run_id)
        self._end_run(run_id, status, reason, message)

    def _release_leftovers(self, run_id: str, end: AttemptEnd = AttemptEnd.LOST) -> None:
        """Free what the ledger still holds for the run and end its open attempts: an attempt
        whose submit a killed launcher left half done (its resource recorded, its handle never
        stored) is not the stored handle's, so closing that one did not free it."""
        self._release_recorded(run_id)
        for attempt in self.store.attempts(run_id):
            if attempt.ended_at is None:
                self.store.end_attempt(
                    run_id, attempt.number, end, message="its launcher was gone"
                )

    def _close_attempt(
        self,
        run_id: str,
        handle: Any,
        st: TargetStatus,
        streamed: StreamedLog,
        *,
        keep_log: bool,
        final: bool = False,
    ) -> PullResult:
        """Pull what the attempt left, complete its log with what was streamed (and keep it
        apart when another attempt follows), free the attempt and write down how it ended.
        What a pull could not get whole (a file still being written) stays on the machine where
        the target can keep it; everything else is freed.

        The run's last pull is retried for minutes (`LAUNCH_FINAL_PULL_S`): a dropped
        connection at the end of a long run must not cost its results. Where they live only on
        the machine (`Target.data_dies_with_machine`) and still do not come, the machine is
        kept, and the error says how to finish."""
        n = handle.attempt
        out = Path(self.store.get(run_id).output_dir)
        end = attempt_end(st)
        try:
            result = self._final_pull(handle, out) if final else self.target.pull(handle, out)
        except LaunchError as e:
            if final and self.target.data_dies_with_machine:
                raise self._keep_machine(run_id, handle, end, e) from e
            self.target.cleanup(handle, keep_data=True)
            self._ledger(run_id, n).release_attempt()
            self.store.end_attempt(run_id, n, end, message=f"pull failed: {e.message}")
            raise PullFailedError(f"pull failed: {e.message}", hint=e.hint) from e
        keep_attempt_log(out, n, streamed, apart=keep_log)
        self.target.cleanup(handle, keep_data=bool(result.changed_during_copy))
        self._ledger(run_id, n).release_attempt()
        self.store.end_attempt(run_id, n, end, message=st.message, usage=self._usage(handle))
        return result

    def _final_pull(self, handle: Any, out: Path) -> PullResult:
        """`target.pull`, retried with backoff until `LAUNCH_FINAL_PULL_S` have passed."""
        from launcher import settings

        deadline = self.clock() + settings.seconds("LAUNCH_FINAL_PULL_S", 300.0)
        wait = 2.0
        while True:
            try:
                return self.target.pull(handle, out)
            except TargetError as e:  # the platform's trouble may pass; a missing extra won't
                left = deadline - self.clock()
                if left <= 0:
                    raise
                pause = min(wait, 60.0, left)
                self.reporter.note(
                    f"the final pull failed ({e.message}); trying again in {pause:.0f}s "
                    f"(for {left:.0f}s more)"
                )
                self.sleep(pause)
                wait *= 2

    def _keep_machine(
        self, run_id: str, handle: Any, end: AttemptEnd, error: LaunchError
    ) -> PullFailedError:
        """The final pull failed where the outputs live only on the machine: keep it, KEPT in
        the ledger (gc leaves it), and say what it costs and how to finish."""
        where = self.target.describe(handle) or f"the {self.target.name} machine"
        price = f" (still billing ${handle.price_per_hour}/h)" if handle.price_per_hour else ""
        for res in self.store.resources(
            run_id=run_id, unreleased_only=True, attempt=handle.attempt
        ):
            self.store.mark_resource(res.id, ResourceState.KEPT)
        message = f"the final pull failed ({error.message}); {where} is kept{price}"
        self.store.end_attempt(run_id, handle.attempt, end, message=message)
        return PullFailedError(
            f"{message}: what did not come home is still on it",
            hint=f"`launch pull {run_id}` fetches it, then `launch gc` frees the machine",
        )

    def _usage(self, handle: Any) -> dict[str, float]:
        """What the platform counted (quota hours): worth recording, never worth failing for."""
        try:
            return self.target.usage(handle)
        except LaunchError as e:
            self.reporter.note(f"could not read what the run used on {self.target.name}: {e}")
            return {}

    def _salvage(self, run_id: str, error: BaseException) -> None:
        """Something broke while watching: free what is billed, keep what is not pulled."""
        record = self.store.get(run_id)
        if record.status.is_terminal():
            return
        if record.handle is not None:
            handle = self._handle(run_id)
            try:
                self.target.cancel(handle)
                self.target.pull(handle, Path(record.output_dir))
            except Exception as e:  # noqa: BLE001 - best effort; the cleanup below must still run
                self.reporter.note(f"could not stop/pull before cleanup: {e}")
            try:
                self.target.cleanup(handle, keep_data=True)
                self._ledger(run_id, handle.attempt).release_attempt()
                self.store.end_attempt(
                    run_id, handle.attempt, AttemptEnd.LOST, message=_text(error)
                )
                self._release_leftovers(run_id)
            finally:
                self._fail(run_id, FailureReason.REMOTE_LOST, error)
        else:
            try:
                self._release_leftovers(run_id)
            finally:
                self._fail(run_id, FailureReason.REMOTE_LOST, error)

    # ---- runs whose launcher is gone ---------------------------------------------------------

    def finish(self, run_id: str, st: TargetStatus) -> RunRecord:
        """End a run whose attempt has ended and whose launcher died (`launch status
        --refresh`): final pull, cleanup, terminal status. No further attempt is started."""
        why_not = (
            "its launcher was gone, so no new attempt was started" if st.phase in _EARLY else None
        )
        self._finish(run_id, st, StreamedLog(), why_not=why_not)
        return self.store.get(run_id)

    def stop_and_finish(self, run_id: str, reason: StopReason) -> RunRecord:
        """Stop a running job (it checkpoints), then pull, clean up and end the run. Its log
        is not shown: whoever asks did not ask to watch."""
        self.store.request_stop(run_id, reason)
        st, streamed = self._watch(run_id, show_logs=False)
        self._finish(run_id, st, streamed)
        return self.store.get(run_id)

    def abandon(self, run_id: str, reason: FailureReason) -> RunRecord:
        """End a run that never got a handle: free whatever its ledger recorded."""
        self._release_leftovers(run_id, AttemptEnd.SUBMIT_FAILED)
        status = (
            RunStatus.CANCELLED if reason is FailureReason.USER_CANCELLED else RunStatus.FAILED
        )
        return self._end_run(run_id, status, reason, "ended before its job started")
