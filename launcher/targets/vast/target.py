"""The Vast.ai target: rent the best offer that fits, run the agent over SSH, bring it home.

    submit    search offers, best $/h per reliability first (skipping offers an earlier attempt
              tried) -> ledger intent (label launch:<store key>:<run id>) -> create -> handle
    advance   once the instance runs: attach our key -> connect (pin the host key) -> push
              bundle, inputs, checkpoints to resume from (only what differs, hash-checked)
              -> start the agent detached (it survives SSH drops)
    status    the instance row through `NATIVE_STATUS`, then the agent's status.json (SFTP); an
              instance outbid or dead reads PREEMPTED: the orchestrator moves the run on
    pull      outputs, checkpoints, logs by manifest diff, verified (workspace.py, sftp.py)
    cleanup   destroy the instance: Vast bills a stopped instance's disk, so nothing is kept

Renting and instance states are in `lifecycle.py`; the instance's workspace (layout, upload,
agent start, status.json, pull) in `workspace.py`; `launch plan` in `plan.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from launcher import agent as agent_mod
from launcher.errors import TargetError, TargetUnavailableError
from launcher.inputs import InputWays, Way
from launcher.progress import MeterFactory
from launcher.store.identity import store_key
from launcher.sync import PullResult
from launcher.targets.base import (
    AttemptSpec,
    CheckResult,
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
from launcher.targets.jobfiles import AgentStatus, agent_phase, parse_log_chunk
from launcher.targets.vast.client import VastClient, VastInstance, api_key, api_url
from launcher.targets.vast.lifecycle import NATIVE_STATUS, destroy_labelled, parse_label, rent
from launcher.targets.vast.prepare import prepare_vast
from launcher.targets.vast.ssh import (
    TRANSIENT,
    HostKeyChangedError,
    SshConn,
    SshUnreachableError,
    ensure_key,
)
from launcher.targets.vast.workspace import (
    VastHandle,
    VastPrepared,
    agent_alive,
    agent_status,
    pull_workspace,
    signal_agent,
    start_agent,
    upload,
    with_real_price,
)

if TYPE_CHECKING:
    from launcher.spec import JobSpec

DEFAULT_ATTEMPTS = 4  # instances one run may use: pre-empted, or dead before the job started
ROW_TTL_S = 0.25  # one orchestrator poll (advance + status) reads the instance row once
SSH_LOST_AFTER_S = 300.0  # an instance that runs but never answers SSH for this long is lost
AGENT_SILENT_S = 30.0  # a heartbeat unchanged this long makes us ask whether the agent lives


class _Link:
    """One SSH connection to an instance, and what this process saw through it: when SSH went
    quiet and when the heartbeat last moved. A new process starts a new link and counts anew."""

    def __init__(self, conn: SshConn) -> None:
        self.conn = conn
        self.down_since: float | None = None
        self.beat: tuple[datetime | None, float] = (None, 0.0)

    def heartbeat_ok(self, st: AgentStatus) -> bool:
        """Has the heartbeat moved within AGENT_SILENT_S? (Local clock only: no skew.)"""
        now = time.monotonic()
        seen, since = self.beat
        if st.heartbeat_at != seen or st.phase == "exited":
            self.beat = (st.heartbeat_at, now)
            return True
        return now - since < AGENT_SILENT_S


class VastTarget(Target[VastPrepared, VastHandle]):
    name: ClassVar[str] = "vast"
    prepared_model: ClassVar[type[Prepared]] = VastPrepared
    handle_model: ClassVar[type[Handle]] = VastHandle
    stray_kind: ClassVar[str] = "instance"
    data_dies_with_machine: ClassVar[bool] = True
    # an instance has the internet: it downloads datasets and URLs itself, faster than here
    input_ways: ClassVar[InputWays] = InputWays(
        path=(Way.UPLOAD,),
        kaggle=(Way.FETCH_THERE,),
        url=(Way.FETCH_THERE,),
        hf=(Way.FETCH_THERE,),
    )

    def __init__(
        self,
        home: Path,
        notify: Notify = lambda _m: None,
        client: VastClient | None = None,
        meter: MeterFactory | None = None,
    ) -> None:
        super().__init__(home, notify, meter)
        self._client = client
        self._links: dict[int, _Link] = {}  # instance id -> connection (a cache)
        self._rows: dict[int, tuple[float, VastInstance | None]] = {}  # a read-through cache

    @property
    def client(self) -> VastClient:
        if self._client is None:
            self._client = VastClient()
        return self._client

    def _row(self, iid: int) -> VastInstance | None:
        """The instance's row, read at most once per ROW_TTL_S: advance() and status() of
        one poll share it, which halves the API calls a run makes (Vast rate-limits)."""
        now = time.monotonic()
        cached = self._rows.get(iid)
        if cached is not None and now - cached[0] < ROW_TTL_S:
            return cached[1]
        row = self.client.show_instance(iid)
        self._rows[iid] = (now, row)
        return row

    def _link(self, h: VastHandle, row: VastInstance) -> _Link:
        addr = row.ssh_address()
        if addr is None:
            raise TargetError("the instance runs but shows no ssh address yet")
        link = self._links.get(h.instance_id)
        if link is None or (link.conn.host, link.conn.port) != addr:
            if link is not None:
                link.conn.close()
            key_path, _pub = ensure_key(self.home)
            pinned = link.conn.host_key if link is not None else h.host_key
            link = self._links[h.instance_id] = _Link(
                SshConn(addr[0], addr[1], key_path, host_key=pinned)
            )
        return link

    def _drop_link(self, iid: int) -> None:
        link = self._links.pop(iid, None)
        if link is not None:
            link.conn.close()

    @classmethod
    def check(cls) -> CheckResult:
        try:
            api_key()
        except TargetUnavailableError as e:
            return CheckResult(ok=False, problems=[e.message], hints=[e.hint or ""])
        return CheckResult(ok=True, details={"api": api_url()})

    # ---- prepare / submit -------------------------------------------------------------------

    def prepare(self, spec: JobSpec, run_id: str, workdir: Path) -> VastPrepared:
        _ = self.client  # no API key: say so before building anything
        prepared = prepare_vast(spec, run_id, self.home, self.notify)
        return prepared.model_copy(update={"max_attempts": DEFAULT_ATTEMPTS})

    def submit(
        self,
        prepared: VastPrepared,
        ledger: Ledger,
        attempt: AttemptSpec,
        previous: VastHandle | None,
    ) -> VastHandle:
        tried = previous.tried if previous is not None else []
        return rent(self.client, self.home, prepared, attempt, tried, ledger, self.notify)

    def describe(self, handle: VastHandle) -> str:
        return f"instance {handle.instance_id} (offer {handle.offer_id}, {handle.gpu})"

    # ---- after provisioning -----------------------------------------------------------------

    def advance(
        self, prepared: VastPrepared, handle: VastHandle, ledger: Ledger
    ) -> VastHandle | None:
        h = handle
        if h.started:
            return None
        row = self._row(h.instance_id)
        if row is None or row.actual_status != "running":
            return None
        if not h.key_attached:
            _key_path, public = ensure_key(self.home)
            self.client.attach_ssh_key(h.instance_id, public)
            return with_real_price(h, row).model_copy(update={"key_attached": True})
        try:
            conn = self._link(h, row).conn
            conn.connect()
        except HostKeyChangedError:
            raise
        except (TargetError, OSError, EOFError) as e:
            self.notify(f"waiting for ssh on instance {h.instance_id}: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - paramiko's auth/banner errors while sshd starts
            self.notify(f"waiting for ssh on instance {h.instance_id}: {e}")
            return None
        h = h.model_copy(update={"host_key": conn.host_key})
        try:  # each step is idempotent: a failed one is simply done again next poll
            if not h.uploaded:
                upload(conn, prepared, h, self.notify, self.meter)
                return h.model_copy(update={"uploaded": True})
            start_agent(conn, prepared, h)
            return h.model_copy(update={"started": True})
        except SshUnreachableError as e:
            self.notify(f"instance {h.instance_id}: {e.message}; trying again")
            return h

    # ---- watch ------------------------------------------------------------------------------

    def status(self, handle: VastHandle) -> TS:
        h = handle
        row = self._row(h.instance_id)
        if row is None:
            return TS(phase=Phase.LOST, message=f"instance {h.instance_id} is gone")
        actual = row.actual_status
        machine = NATIVE_STATUS.get(actual)
        if machine is None:
            self.notify(f"unknown Vast status {actual!r}; treating it as provisioning")
            machine = Phase.PROVISIONING
        if machine is Phase.PREEMPTED:
            outbid = row.intended_status == "running" and actual == "stopped"
            why = "pre-empted (outbid)" if outbid else f"{actual}"
            when = "" if h.started else " before the job started"
            return TS(
                phase=Phase.PREEMPTED,
                stop_reason="outbid" if outbid else "machine_lost",
                message=f"instance {h.instance_id} is {why}{when}: {row.status_msg or ''}".strip(
                    ": "
                ),
            )
        if machine is Phase.PROVISIONING:
            return TS(phase=Phase.PROVISIONING, message=row.status_msg or "")
        if not h.started:  # nothing runs until the agent is started (a stop then starts none)
            return TS(phase=Phase.UPLOADING)
        try:
            link = self._link(h, row)
            st = agent_status(link.conn, h)
            alive = link.heartbeat_ok(st) or agent_alive(link.conn, h)
        except HostKeyChangedError:
            raise
        except TargetError as e:
            link = self._links.get(h.instance_id)
            if link is not None:
                link.down_since = link.down_since or time.monotonic()
                if time.monotonic() - link.down_since > SSH_LOST_AFTER_S:
                    return TS(phase=Phase.LOST, message=f"no ssh for {SSH_LOST_AFTER_S:g}s: {e}")
            return TS(phase=Phase.RUNNING, message=f"ssh unreachable, retrying: {e.message}")
        link.down_since = None
        return agent_phase(st, alive)

    def read_logs(self, handle: VastHandle, cursor: int) -> tuple[list[LogLine], int]:
        h = handle
        if not h.started:
            return [], cursor
        try:
            link = self._links.get(h.instance_id)
            if link is None:  # a process that only reads logs (`launch logs RUN`)
                row = self._row(h.instance_id)
                if row is None or row.actual_status != "running":
                    return [], cursor
                link = self._link(h, row)
            chunk = link.conn.read_from(f"{h.root}/{agent_mod.LOG_FILE}", cursor)
        except TargetError:
            return [], cursor  # read again after the reconnect: the cursor did not move
        if not chunk:
            return [], cursor
        lines, used = parse_log_chunk(chunk)
        return lines, cursor + used

    def pull(self, handle: VastHandle, dest: Path) -> PullResult:
        h = handle
        if not h.started:
            return PullResult()
        row = self._row(h.instance_id)
        if row is None or row.actual_status != "running":
            self.notify(f"instance {h.instance_id} is not running: nothing more to pull")
            return PullResult()
        link = self._link(h, row)
        for attempt in range(3):
            try:
                return pull_workspace(link.conn, h, dest, self.meter("pull from the instance"))
            except (*TRANSIENT, SshUnreachableError) as e:  # what was installed stays
                link.conn.close()
                self._rows.pop(h.instance_id, None)
                now = self._row(h.instance_id)
                if now is None or now.actual_status != "running":
                    # pre-empted or gone while we pulled: status() says so next
                    self.notify(f"instance {h.instance_id} stopped answering: pull skipped")
                    return PullResult()
                if attempt == 2:
                    raise TargetError(f"pull from instance {h.instance_id} failed: {e}") from e
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    # ---- stop / free ------------------------------------------------------------------------

    def _signal(self, handle: VastHandle, sig: str, control: bool) -> None:
        h = handle
        if not h.started:  # nothing runs yet; the orchestrator never starts it now
            return
        try:
            row = self._row(h.instance_id)
            if row is None or row.actual_status != "running":
                return
            signal_agent(self._link(h, row).conn, h, sig, control)
        except TargetError as e:
            self.notify(f"could not signal the agent on instance {h.instance_id}: {e.message}")

    def cancel(self, handle: VastHandle) -> None:
        self._signal(handle, "TERM", control=True)

    def kill(self, handle: VastHandle) -> None:
        self._signal(handle, "KILL", control=False)

    def cleanup(self, handle: VastHandle, *, keep_data: bool = False) -> None:
        # keep_data cannot keep anything here (`data_dies_with_machine`): the orchestrator
        # does not call this for a machine whose outputs did not come home
        self._drop_link(handle.instance_id)
        self.client.destroy_instance(handle.instance_id)
        destroy_labelled(self.client, handle.label)
        self._rows.pop(handle.instance_id, None)

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if native_id.isdigit():
            self.client.destroy_instance(int(native_id))
        label = str(data.get("label") or native_id)
        if parse_label(label) is not None:
            destroy_labelled(self.client, label)

    def labelled(self) -> list[tuple[str, str, str]]:
        """Instances this store labelled (`launch:<store key>:<run id>`): (instance id, run id,
        actual status). Other stores' and anyone else's instances are never listed here."""
        mine = store_key(self.home)
        return [
            (str(r.id), run_id, str(r.actual_status))
            for r, (run_id, owner) in self._launch_rows()
            if owner == mine
        ]

    def not_ours(self) -> list[Foreign]:
        mine = store_key(self.home)
        return [
            Foreign(
                native_id=str(r.id),
                run_id=run_id,
                state=str(r.actual_status),
                label=str(r.label),
                owner=owner,
            )
            for r, (run_id, owner) in self._launch_rows()
            if owner != mine
        ]

    def _launch_rows(self) -> list[tuple[VastInstance, tuple[str, str]]]:
        """The account's instances with a label launch made, each with (run id, store key)."""
        try:
            rows = self.client.list_instances()
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Vast instances: {e.message}")
            return []
        return [(r, parsed) for r in rows if (parsed := parse_label(r.label)) is not None]

    def plan(self, spec: JobSpec) -> Plan:
        from launcher.targets.vast.plan import plan_vast

        return plan_vast(self.client, spec)
