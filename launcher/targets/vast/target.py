"""The Vast.ai target: rent the best offer that fits, run the agent over SSH, bring it home.

    submit    search offers, best $/h per reliability first -> ledger intent (label
              launch-<run id>) -> create -> handle
    advance   once the instance runs: attach our key -> connect (pin the host key) -> push
              bundle, inputs, checkpoints to resume from (only what differs, hash-checked)
              -> start the agent detached (it survives SSH drops)
    status    the instance row through `NATIVE_STATUS`, then the agent's status.json (SFTP)
    pull      outputs, checkpoints, logs by manifest diff, verified (workspace.py, sftp.py)
    advance   (mid-run) pre-empted: keep what was streamed, rent again, resume (moves.py)
    cleanup   destroy the instance: Vast bills a stopped instance's disk, so nothing is kept

Renting and instance states are in `lifecycle.py`; the instance's workspace (layout, upload,
agent start, status.json, pull) in `workspace.py`; `launch plan` in `plan.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

from launcher import agent as agent_mod
from launcher.errors import TargetError, TargetUnavailableError
from launcher.state import RunHandle
from launcher.sync import PullResult
from launcher.targets.base import CheckResult, Ledger, LogLine, Phase, Plan, Prepared, Target
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import agent_phase, parse_log_chunk
from launcher.targets.vast.client import VastClient, api_key, api_url
from launcher.targets.vast.lifecycle import (
    DEAD,
    LABEL_PREFIX,
    NATIVE_STATUS,
    destroy_labelled,
    ours,
    preempted,
    rent,
    ssh_address,
)
from launcher.targets.vast.moves import LogTail, next_attempt
from launcher.targets.vast.prepare import first_handle, prepare_vast
from launcher.targets.vast.ssh import (
    TRANSIENT,
    HostKeyChangedError,
    SshConn,
    SshUnreachableError,
    ensure_key,
)
from launcher.targets.vast.workspace import (
    VastHandle,
    agent_alive,
    agent_status,
    pull_workspace,
    run_handle,
    signal_agent,
    start_agent,
    upload,
    with_real_price,
)

MAX_REPLACEMENTS = 2  # instances that died before the job started, replaced by another offer
MAX_PREEMPTIONS = 3  # pre-empted mid-run: resumed on another offer this many times at most
ROW_TTL_S = 0.25  # one orchestrator poll (advance + status) reads the instance row once
SSH_LOST_AFTER_S = 300.0  # an instance that runs but never answers SSH for this long is lost
AGENT_SILENT_S = 30.0  # a heartbeat unchanged this long makes us ask whether the agent lives


class VastTarget(Target):
    name: ClassVar[str] = "vast"

    def __init__(
        self,
        home: Path,
        notify: Callable[[str], None] = lambda _m: None,
        client: VastClient | None = None,
    ) -> None:
        self.home = home
        self.notify = notify
        self._client = client
        self._conns: dict[str, SshConn] = {}
        self._ssh_down_since: dict[str, float] = {}
        self._beats: dict[str, tuple[str | None, float]] = {}
        self._latest: dict[str, VastHandle] = {}
        self._pulled_to: dict[str, Path] = {}  # where this process last pulled each run
        self._cursor: dict[str, int] = {}  # the log cursor last handed out, per run
        self._rows: dict[int, tuple[float, dict[str, Any] | None]] = {}
        self._tails: dict[str, LogTail] = {}  # job.log bytes streamed since the last pull
        self._stopped_early: set[str] = set()  # cancelled before the agent was started

    def _row(self, iid: int) -> dict[str, Any] | None:
        """The instance's row, read at most once per ROW_TTL_S: advance() and status() of
        one poll share it, which halves the API calls a run makes (Vast rate-limits)."""
        now = time.monotonic()
        cached = self._rows.get(iid)
        if cached is not None and now - cached[0] < ROW_TTL_S:
            return cached[1]
        row = self.client.show_instance(iid)
        self._rows[iid] = (now, row)
        return row

    def _h(self, handle: RunHandle) -> VastHandle:
        """The handle's data, or what advance() made of it since, if further along.

        NOTE: the orchestrator's supervise() ends a run (final pull, cleanup) with the handle
        it started from, not the one advance() returned; without this the final pull would
        think the agent never started, or read a pre-empted instance instead of its successor.
        """
        mine = self._latest.get(handle.run_id)
        return mine if mine is not None else VastHandle.model_validate(handle.data)

    @property
    def client(self) -> VastClient:
        if self._client is None:
            self._client = VastClient()
        return self._client

    @classmethod
    def check(cls) -> CheckResult:
        try:
            api_key()
        except TargetUnavailableError as e:
            return CheckResult(ok=False, problems=[e.message], hints=[e.hint or ""])
        return CheckResult(ok=True, details={"api": api_url()})

    # ---- prepare / submit -------------------------------------------------------------------

    def prepare(self, spec: Any, run_id: str, workdir: Path) -> Prepared:
        _ = self.client  # no API key: say so before building anything
        return prepare_vast(spec, run_id, self.home, self.notify)

    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        h = self._rent_one(first_handle(prepared, LABEL_PREFIX), ledger)
        return self._run_handle(prepared.run_id, h)

    def _rent_one(self, h: VastHandle, ledger: Ledger) -> VastHandle:
        return rent(self.client, self.home, h, ledger, self.notify)

    def _run_handle(self, run_id: str, h: VastHandle) -> RunHandle:
        return run_handle(self.name, run_id, h)

    def _resume_elsewhere(
        self, handle: RunHandle, h: VastHandle, row: Mapping[str, Any], ledger: Ledger
    ) -> RunHandle:
        """Pre-empted mid-run: continue on another offer from the newest pulled checkpoint.

        The pulled outputs go up with the checkpoints, metrics.jsonl as it was when the newest
        pulled checkpoint was written; the old instance's log, completed with what was streamed
        after the last pull, is kept beside the new one as logs/job.<instance>.log (moves.py).
        """
        h = next_attempt(
            h,
            self._pulled_to.get(handle.run_id),
            self._tails.pop(handle.run_id, None),
            self._cursor.get(handle.run_id, h.log_base),
            self.notify,
        )
        self.notify(
            f"instance {h.instance_id} was pre-empted ({row.get('status_msg') or 'outbid'}); "
            + (f"resuming from {h.resume_from}" if h.resume_from else "restarting")
        )
        return self._replace(handle, h, row, ledger)

    def _replace(
        self, handle: RunHandle, h: VastHandle, row: Mapping[str, Any], ledger: Ledger
    ) -> RunHandle:
        """The instance died (before the job started, or pre-empted): destroy it, rent anew.

        Destroy first and only then create: a replacement made before the old one is surely
        gone could leave two paid instances for one run.
        """
        if not h.started:
            self.notify(
                f"instance {h.instance_id} is {row.get('actual_status')} before the job started "
                f"({row.get('status_msg') or 'no message'}): destroying it, trying the next offer"
            )
            h = h.model_copy(update={"replacements": h.replacements + 1})
        conn = self._conns.pop(handle.run_id, None)
        if conn is not None:
            conn.close()
        self.client.destroy_instance(h.instance_id)
        destroy_labelled(self.client, h.label)
        if h.attempts and h.attempts[-1].end is None:  # its bill stops here
            ended = h.attempts[-1].model_copy(update={"end": time.time()})
            h = h.model_copy(update={"attempts": [*h.attempts[:-1], ended]})
        fresh = VastHandle.model_validate(
            h.model_dump(exclude={"host_key", "key_attached", "uploaded", "started"})
        )
        fresh = self._rent_one(fresh, ledger)
        self._latest[handle.run_id] = fresh
        return self._run_handle(handle.run_id, fresh)

    # ---- after provisioning -----------------------------------------------------------------

    def _conn(self, run_id: str, h: VastHandle, row: Mapping[str, Any]) -> SshConn:
        addr = ssh_address(row)
        if addr is None:
            raise TargetError("the instance runs but shows no ssh address yet")
        conn = self._conns.get(run_id)
        if conn is None or (conn.host, conn.port) != addr:
            if conn is not None:
                conn.close()
            key_path, _pub = ensure_key(self.home)
            pinned = conn.host_key if conn is not None else h.host_key
            conn = SshConn(addr[0], addr[1], key_path, host_key=pinned)
            self._conns[run_id] = conn
        return conn

    def advance(self, handle: RunHandle, ledger: Ledger) -> RunHandle | None:
        h = self._h(handle)
        if handle.run_id in self._stopped_early:
            return None  # asked to stop before the job started: never start it
        if h.started:
            if h.preemptions >= MAX_PREEMPTIONS:
                return None
            row = self._row(h.instance_id)
            if row is None or not preempted(row):
                return None
            return self._resume_elsewhere(handle, h, row, ledger)
        row = self._row(h.instance_id)
        if (
            row is not None
            and row.get("actual_status") in DEAD
            and h.replacements < MAX_REPLACEMENTS
        ):
            return self._replace(handle, h, row, ledger)
        if row is None or row.get("actual_status") != "running":
            return None
        if not h.key_attached:
            _key_path, public = ensure_key(self.home)
            self.client.attach_ssh_key(h.instance_id, public)
            h.key_attached = True
            h = with_real_price(h, row)
            self._latest[handle.run_id] = h
            return self._run_handle(handle.run_id, h)
        try:
            conn = self._conn(handle.run_id, h, row)
            conn.connect()
        except HostKeyChangedError:
            raise
        except (TargetError, OSError, EOFError) as e:
            self.notify(f"waiting for ssh on instance {h.instance_id}: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - paramiko's auth/banner errors while sshd starts
            self.notify(f"waiting for ssh on instance {h.instance_id}: {e}")
            return None
        h.host_key = conn.host_key
        try:  # each step is idempotent: a failed one is simply done again next poll
            if not h.uploaded:
                upload(conn, h, self.notify)
                h.uploaded = True
            else:
                start_agent(conn, h)
                h.started = True
        except SshUnreachableError as e:
            self.notify(f"instance {h.instance_id}: {e.message}; trying again")
            self._latest[handle.run_id] = h
            return handle.model_copy(update={"data": h.model_dump()})
        self._latest[handle.run_id] = h
        return handle.model_copy(update={"data": h.model_dump()})

    # ---- watch ------------------------------------------------------------------------------

    def status(self, handle: RunHandle) -> TS:
        h = self._h(handle)
        if handle.run_id in self._stopped_early:
            return TS(phase=Phase.STOPPED, stop_reason="control", message="stopped before start")
        row = self._row(h.instance_id)
        if row is None:
            return TS(phase=Phase.LOST, message=f"instance {h.instance_id} is gone")
        actual, intended = row.get("actual_status"), row.get("intended_status")
        machine = NATIVE_STATUS.get(actual)
        if machine is None:
            self.notify(f"unknown Vast status {actual!r}; treating it as provisioning")
            machine = Phase.PROVISIONING
        if machine is Phase.LOST:
            why = "pre-empted (outbid)" if intended == "running" and actual == "stopped" else ""
            if h.started and h.preemptions >= MAX_PREEMPTIONS:
                why += f"; moved {h.preemptions} times already, the limit"
            msg = f"instance {h.instance_id} is {actual}{', ' + why.lstrip('; ') if why else ''}"
            return TS(phase=Phase.LOST, message=f"{msg}: {row.get('status_msg') or ''}".strip())
        if machine is Phase.PROVISIONING:
            return TS(phase=Phase.PROVISIONING, message=str(row.get("status_msg") or ""))
        if not h.started:
            return TS(phase=Phase.STARTING if h.uploaded else Phase.UPLOADING)
        try:
            conn = self._conn(handle.run_id, h, row)
            st = agent_status(conn, h)
            alive = self._heartbeat_ok(handle.run_id, st) or agent_alive(conn, h)
        except HostKeyChangedError:
            raise
        except TargetError as e:
            since = self._ssh_down_since.setdefault(handle.run_id, time.monotonic())
            if time.monotonic() - since > SSH_LOST_AFTER_S:
                return TS(phase=Phase.LOST, message=f"no ssh for {SSH_LOST_AFTER_S:g}s: {e}")
            return TS(phase=Phase.RUNNING, message=f"ssh unreachable, retrying: {e.message}")
        self._ssh_down_since.pop(handle.run_id, None)
        return agent_phase(st, alive)

    def _heartbeat_ok(self, run_id: str, st: Mapping[str, Any]) -> bool:
        """Has the heartbeat moved within AGENT_SILENT_S? (Local clock only: no skew.)"""
        beat = cast("str | None", st.get("heartbeat_at"))
        seen, since = self._beats.get(run_id, (None, 0.0))
        now = time.monotonic()
        if beat != seen or st.get("phase") == "exited":
            self._beats[run_id] = (beat, now)
            return True
        return now - since < AGENT_SILENT_S

    def read_logs(self, handle: RunHandle, cursor: int) -> tuple[list[LogLine], int]:
        h = self._h(handle)
        conn = self._conns.get(handle.run_id)
        if not h.started or conn is None:
            return [], cursor
        try:
            # a resumed run's log starts again at 0 on its new instance
            chunk = conn.read_from(f"{h.root}/{agent_mod.LOG_FILE}", max(0, cursor - h.log_base))
        except TargetError:
            return [], cursor  # read again after the reconnect: the cursor did not move
        if not chunk:
            return [], cursor
        lines, used = parse_log_chunk(chunk)
        self._tails.setdefault(handle.run_id, LogTail()).add(cursor - h.log_base, chunk[:used])
        self._cursor[handle.run_id] = cursor + used
        return lines, cursor + used

    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        h = self._h(handle)
        self._pulled_to[handle.run_id] = dest
        empty = PullResult(copied=[], skipped_unchanged=0, bytes_copied=0, changed_during_copy=[])
        if not h.started:
            return empty
        row = self._row(h.instance_id)
        if row is None or row.get("actual_status") != "running":
            self.notify(f"instance {h.instance_id} is not running: nothing more to pull")
            return empty
        conn = self._conn(handle.run_id, h, row)
        for attempt in range(3):
            try:
                result = pull_workspace(conn, h, dest)
                log = dest / agent_mod.LOG_FILE
                if handle.run_id in self._tails and log.is_file():
                    self._tails[handle.run_id].pulled(log.stat().st_size)
                return result
            except (*TRANSIENT, SshUnreachableError) as e:  # what was installed stays
                conn.close()
                self._rows.pop(h.instance_id, None)
                now = self._row(h.instance_id)
                if now is None or now.get("actual_status") != "running":
                    # pre-empted or gone while we pulled: the next advance() deals with it
                    self.notify(f"instance {h.instance_id} stopped answering: pull skipped")
                    return empty
                if attempt == 2:
                    raise TargetError(f"pull from instance {h.instance_id} failed: {e}") from e
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    # ---- stop / free ------------------------------------------------------------------------

    def _signal(self, handle: RunHandle, sig: str, control: bool) -> None:
        h = self._h(handle)
        if not h.started:
            return
        try:
            row = self._row(h.instance_id)
            if row is None or row.get("actual_status") != "running":
                return
            signal_agent(self._conn(handle.run_id, h, row), h, sig, control)
        except TargetError as e:
            self.notify(f"could not signal the agent on instance {h.instance_id}: {e.message}")

    def cancel(self, handle: RunHandle) -> None:
        if not self._h(handle).started:  # nothing runs yet to checkpoint: just never start it
            self._stopped_early.add(handle.run_id)
        self._signal(handle, "TERM", control=True)

    def kill(self, handle: RunHandle) -> None:
        self._signal(handle, "KILL", control=False)

    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        # keep_data cannot keep anything here: a stopped instance still bills its disk
        h = self._h(handle)
        conn = self._conns.pop(handle.run_id, None)
        if conn is not None:
            conn.close()
        self.client.destroy_instance(h.instance_id)
        destroy_labelled(self.client, h.label)

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if native_id.isdigit():
            self.client.destroy_instance(int(native_id))
        label = str(data.get("label") or native_id)
        if ours(label) is not None:
            destroy_labelled(self.client, label)

    def labelled(self) -> list[tuple[str, str, str]]:
        """Instances whose label our scheme made (`launch-<run id>`): (instance id, run id,
        actual status). Anyone else's instances, labelled or not, are never listed."""
        try:
            rows = self.client.list_instances()
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Vast instances: {e.message}")
            return []
        found: list[tuple[str, str, str]] = []
        for r in rows:
            run_id = ours(r.get("label"))
            if run_id is not None:
                found.append((str(r["id"]), run_id, str(r.get("actual_status"))))
        return found

    def plan(self, spec: Any) -> Plan:
        from launcher.targets.vast.plan import plan_vast

        return plan_vast(self.client, spec)
