"""The Vast.ai target: rent the cheapest offer that fits, run the agent over SSH, bring it home.

    submit    search offers -> ledger intent (label launch-<run id>) -> create -> handle
    advance   once the instance runs: attach our key -> connect (pin the host key) -> upload
              and verify the bundle -> start the agent detached (it survives SSH drops)
    status    the instance row through `_NATIVE_STATUS`, then the agent's status.json (SFTP)
    cleanup   destroy the instance: Vast bills a stopped instance's disk, so nothing is kept

The instance's workspace (layout, upload, agent start, status.json) is in `workspace.py`.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, cast

from launcher import agent as agent_mod
from launcher.errors import NoCapacityError, TargetError, TargetUnavailableError
from launcher.state import RunHandle
from launcher.sync import PullResult, pull_tree
from launcher.targets.base import CheckResult, Ledger, LogLine, Phase, Prepared, Target
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import agent_config, agent_phase, job_bundle, parse_log_chunk
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.client import VastClient, api_key, api_url
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.ssh import (
    TRANSIENT,
    HostKeyChangedError,
    SftpTree,
    SshConn,
    SshUnreachableError,
    ensure_key,
)
from launcher.targets.vast.workspace import (
    VastHandle,
    agent_alive,
    agent_status,
    start_agent,
    upload,
)

LABEL_PREFIX = "launch-"
MAX_OFFERS_TRIED = 3  # creates tried per rental before giving up
MAX_REPLACEMENTS = 2  # instances that died before the job started, replaced by another offer
MAX_PREEMPTIONS = 3  # pre-empted mid-run: resumed on another offer this many times at most
ROW_TTL_S = 0.25  # one orchestrator poll (advance + status) reads the instance row once
SSH_LOST_AFTER_S = 300.0  # an instance that runs but never answers SSH for this long is lost
AGENT_SILENT_S = 30.0  # a heartbeat unchanged this long makes us ask whether the agent lives
PULLED_DIRS = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})

# "will never reach running: destroy and retry" (Vast's OpenAPI quirks)
_DEAD = frozenset({"exited", "unknown", "offline"})
# Vast's actual_status -> where the machine is. "Intended running, actual stopped" is how an
# outbid interruptible instance looks; exited/unknown/offline never come back to running.
_NATIVE_STATUS: Mapping[str | None, Phase] = {
    None: Phase.PROVISIONING,
    "created": Phase.PROVISIONING,
    "loading": Phase.PROVISIONING,
    "rebooting": Phase.PROVISIONING,
    "running": Phase.RUNNING,
    "stopped": Phase.LOST,
    "frozen": Phase.LOST,
    "exited": Phase.LOST,
    "unknown": Phase.LOST,
    "offline": Phase.LOST,
}


def _preempted(row: Mapping[str, Any]) -> bool:
    """Intended running, actually not: outbid (stopped) or its host went away."""
    actual = row.get("actual_status")
    return row.get("intended_status") == "running" and actual in ("stopped", *_DEAD)


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED_DIRS or path == agent_mod.STATUS_FILE


def _ssh_address(row: Mapping[str, Any]) -> tuple[str, int] | None:
    """Direct (public ip + mapped 22/tcp) when the host offers it, else Vast's ssh proxy."""
    ports = cast("dict[str, Any]", row.get("ports") or {})
    bind = cast("list[dict[str, Any]]", ports.get("22/tcp") or [])
    if bind and bind[0].get("HostPort") and row.get("public_ipaddr"):
        return str(row["public_ipaddr"]), int(bind[0]["HostPort"])
    if row.get("ssh_host") and row.get("ssh_port"):
        return str(row["ssh_host"]), int(row["ssh_port"])
    return None


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
        opts: VastOptions = spec.targets.for_target("vast")
        _ = self.client  # no API key: say so before building anything
        image = opts.image or spec.image
        if not image:
            raise TargetUnavailableError(
                "the vast target runs an image, and this job names none",
                hint="set `image:` or `targets.vast.image: <registry image>`",
            )
        missing = [s for s in spec.secrets if s not in os.environ]
        if missing:
            raise TargetUnavailableError(
                f"secret(s) not set in this shell: {', '.join(missing)}",
                hint="export them before `launch run`; their values never enter the bundle",
            )
        if spec.inputs:
            raise TargetUnavailableError(
                "the vast target does not ship job inputs yet",
                hint="bake the data into the image or download it in the job",
            )
        bundle = job_bundle(spec, self.home, self.notify)
        config = agent_config(spec)
        return Prepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            image=image,
            secrets=list(spec.secrets),
            data={
                "agent": config,
                "query": offers_mod.offer_query(spec, opts),
                "options": opts.model_dump(),
                "disk_gb": float(spec.resources.disk_gb),
            },
        )

    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        d = prepared.data
        h = VastHandle(
            instance_id=0,
            offer_id=0,
            label=f"{LABEL_PREFIX}{prepared.run_id}",
            dph_total=0.0,
            bundle_path=str(prepared.bundle_path),
            bundle_digest=prepared.bundle_digest,
            agent=dict(d["agent"], run_id=prepared.run_id),
            secrets=prepared.secrets,
            resume_from=str(prepared.resume_checkpoints) if prepared.resume_checkpoints else None,
            image=str(prepared.image),
            disk_gb=float(d["disk_gb"]),
            options=d["options"],
            query=d["query"],
        )
        h = self._rent(h, ledger)
        return self._run_handle(prepared.run_id, h)

    def _run_handle(self, run_id: str, h: VastHandle) -> RunHandle:
        """The handle with the rented offer's price, which the orchestrator records."""
        return RunHandle(
            target=self.name,
            run_id=run_id,
            data=h.model_dump(),
            price_per_hour=Decimal(str(h.dph_total)),
        )

    def _rent(self, h: VastHandle, ledger: Ledger) -> VastHandle:
        """Rent the cheapest fitting offer not tried yet; the ledger hears of it first."""
        opts = VastOptions.model_validate(h.options)
        found = [o for o in self.client.search_offers(h.query) if int(o["id"]) not in h.tried]
        if not found:
            raise NoCapacityError(
                "no Vast offer fits this job right now",
                hint="relax targets.vast (max_dph, min_reliability, min_cuda) or the GPU types",
            )
        _key_path, public = ensure_key(self.home)
        ticket = ledger.intent("instance", h.label, {"label": h.label})
        last: TargetError | None = None
        for offer in found[:MAX_OFFERS_TRIED]:
            payload: dict[str, Any] = {
                "client_id": "me",
                "image": h.image,
                "disk": h.disk_gb,
                "label": h.label,
                "env": {},
                "price": offers_mod.bid_price(offer, opts),
                # Vast's ssh mode skips the ENTRYPOINT and runs this after its sshd; the key is
                # also attached through the API once the instance runs
                "onstart": f"mkdir -p /root/.ssh && echo {shlex.quote(public)} "
                ">> /root/.ssh/authorized_keys",
                "runtype": "ssh",
            }
            try:
                iid = self.client.create_instance(int(offer["id"]), payload)
            except TargetError as e:
                last = e
                # the service may have rented it before the answer was lost: never keep a twin
                self._destroy_labelled(h.label)
                self.notify(f"could not rent {offers_mod.describe(offer)}: {e.message}")
                continue
            ledger.created(ticket, native_id=str(iid))
            self.notify(f"rented {offers_mod.describe(offer)} as instance {iid}")
            return h.model_copy(
                update={
                    "instance_id": iid,
                    "offer_id": int(offer["id"]),
                    "dph_total": float(offer.get("dph_total") or 0),
                    "tried": [*h.tried, int(offer["id"])],
                }
            )
        assert last is not None
        raise last

    def _resume_elsewhere(
        self, handle: RunHandle, h: VastHandle, row: Mapping[str, Any], ledger: Ledger
    ) -> RunHandle:
        """Pre-empted mid-run: continue on another offer from the newest pulled checkpoint.

        The pulled outputs go up with the checkpoints (metrics.jsonl continues where it was);
        the old instance's log is kept beside the new one as logs/job.<instance>.log.
        """
        dest = self._pulled_to.get(handle.run_id)
        resume: str | None = None
        if dest is not None and dest.is_dir():
            resume = str(dest)
            old_log = dest / agent_mod.LOG_FILE
            if old_log.is_file():
                old_log.rename(old_log.with_name(f"job.{h.instance_id}.log"))
        self.notify(
            f"instance {h.instance_id} was pre-empted ({row.get('status_msg') or 'outbid'}); "
            + (f"resuming from the checkpoints pulled to {dest}" if resume else "restarting")
        )
        h = h.model_copy(
            update={
                "resume_from": resume,
                "preemptions": h.preemptions + 1,
                "log_base": self._cursor.get(handle.run_id, h.log_base),
                "agent": dict(h.agent, attempt=h.preemptions + 2),
            }
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
        self._destroy_labelled(h.label)
        fresh = VastHandle.model_validate(
            h.model_dump(exclude={"host_key", "key_attached", "uploaded", "started"})
        )
        fresh = self._rent(fresh, ledger)
        self._latest[handle.run_id] = fresh
        return self._run_handle(handle.run_id, fresh)

    def _destroy_labelled(self, label: str) -> None:
        for row in self.client.instances_labelled(label):
            self.client.destroy_instance(int(row["id"]))

    # ---- after provisioning -----------------------------------------------------------------

    def _conn(self, run_id: str, h: VastHandle, row: Mapping[str, Any]) -> SshConn:
        addr = _ssh_address(row)
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
        if h.started:
            if h.preemptions >= MAX_PREEMPTIONS:
                return None
            row = self._row(h.instance_id)
            if row is None or not _preempted(row):
                return None
            return self._resume_elsewhere(handle, h, row, ledger)
        row = self._row(h.instance_id)
        if (
            row is not None
            and row.get("actual_status") in _DEAD
            and h.replacements < MAX_REPLACEMENTS
        ):
            return self._replace(handle, h, row, ledger)
        if row is None or row.get("actual_status") != "running":
            return None
        if not h.key_attached:
            _key_path, public = ensure_key(self.home)
            self.client.attach_ssh_key(h.instance_id, public)
            h.key_attached = True
            self._latest[handle.run_id] = h
            return handle.model_copy(update={"data": h.model_dump()})
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
                upload(conn, h)
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
        row = self._row(h.instance_id)
        if row is None:
            return TS(phase=Phase.LOST, message=f"instance {h.instance_id} is gone")
        actual, intended = row.get("actual_status"), row.get("intended_status")
        machine = _NATIVE_STATUS.get(actual)
        if machine is None:
            self.notify(f"unknown Vast status {actual!r}; treating it as provisioning")
            machine = Phase.PROVISIONING
        if machine is Phase.LOST:
            why = "pre-empted (outbid)" if intended == "running" and actual == "stopped" else ""
            msg = f"instance {h.instance_id} is {actual}{', ' + why if why else ''}"
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
                return pull_tree(SftpTree(conn, h.root), dest, include=_pulled)
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
            conn = self._conn(handle.run_id, h, row)
            if control:  # reaches the agent even if the signal cannot
                conn.write_bytes(f"{h.root}/{agent_mod.CONTROL_FILE}", b'{"desired": "stop"}')
            conn.run(f"kill -{sig} $(cat {h.root}/agent.pid) 2>/dev/null", timeout=30)
            if sig == "KILL":  # the workload runs in its own session
                pid = agent_status(conn, h).get("pid")
                if isinstance(pid, int):
                    conn.run(f"kill -KILL -- -{pid} 2>/dev/null", timeout=30)
        except TargetError as e:
            self.notify(f"could not signal the agent on instance {h.instance_id}: {e.message}")

    def cancel(self, handle: RunHandle) -> None:
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
        self._destroy_labelled(h.label)

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if native_id.isdigit():
            self.client.destroy_instance(int(native_id))
        label = str(data.get("label") or native_id)
        if label.startswith(LABEL_PREFIX):
            self._destroy_labelled(label)

    def labelled(self) -> list[tuple[str, str, str]]:
        """Instances whose label says launch made them: (instance id, run id, actual status)."""
        try:
            rows = self.client.list_instances()
        except (TargetError, TargetUnavailableError) as e:
            self.notify(f"cannot list Vast instances: {e.message}")
            return []
        return [
            (str(r["id"]), str(r["label"])[len(LABEL_PREFIX) :], str(r.get("actual_status")))
            for r in rows
            if str(r.get("label") or "").startswith(LABEL_PREFIX)
        ]
