"""The run's workspace on the instance: what the target keeps about it, and what it runs there.

Layout under `REMOTE_ROOT` is the agent's (bundle/, outputs/, checkpoints/, logs/job.log,
status.json, control.json) plus `agent.pid`, written by the start script.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from launcher import agent as agent_mod
from launcher.bundle import extract_bundle
from launcher.state import RunHandle
from launcher.sync import LocalTree, PullResult, pull_tree, push_tree, tree_files
from launcher.targets.vast.sftp import SftpDest, SftpTree
from launcher.targets.vast.ssh import SshConn

REMOTE_ROOT = "/workspace/launch"
INPUTS = "inputs"
PULLED_DIRS = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


class Attempt(BaseModel):
    """One instance the run rented: what it cost per hour, and from when to when it was held."""

    instance_id: int
    dph_total: float
    start: float  # epoch seconds of the create
    end: float | None = None  # of the destroy; None while held

    def cost(self, now: float) -> Decimal:
        held = max(0.0, (self.end if self.end is not None else now) - self.start)
        return Decimal(str(self.dph_total)) * Decimal(held) / 3600


class VastHandle(BaseModel):
    instance_id: int
    offer_id: int
    label: str
    dph_total: float
    bundle_path: str
    bundle_digest: str
    bundle_dir: str = ""  # the bundle unpacked here, pushed file by file (only changes move)
    inputs: dict[str, str] = {}  # name under inputs/ -> local folder or file
    agent: dict[str, Any]
    secrets: list[str] = []  # names; values are read from this shell when the agent starts
    resume_from: str | None = None  # local checkpoints the job starts from
    resume_skip: list[str] = []  # newer checkpoints not to upload (their metrics were lost)
    root: str = REMOTE_ROOT
    host_key: str | None = None  # pinned on the first connection
    key_attached: bool = False
    uploaded: bool = False
    started: bool = False
    # what renting again needs (a replacement after the instance died before the job started)
    image: str = ""
    disk_gb: float = 10.0
    options: dict[str, Any] = {}
    query: dict[str, Any] = {}
    tried: list[int] = []  # offer ids
    replacements: int = 0  # instances replaced before the job started
    preemptions: int = 0  # instances lost mid-run, resumed on another offer
    log_base: int = 0  # the log cursor at which this instance's job.log starts
    attempts: list[Attempt] = []  # every instance rented for this run, the current one last

    def spent(self, now: float | None = None) -> Decimal:
        """What the run's instances cost so far: $/h x held time, summed over attempts."""
        at = time.time() if now is None else now
        return sum((a.cost(at) for a in self.attempts), Decimal(0))


def with_real_price(h: VastHandle, row: Mapping[str, Any]) -> VastHandle:
    """The instance's own dph_total, once it shows one: an interruptible instance bills our
    bid (5% over the floor the offer showed), plus storage."""
    real = row.get("dph_total")
    if not isinstance(real, int | float) or not real or float(real) == h.dph_total:
        return h
    attempts = h.attempts
    if attempts and attempts[-1].instance_id == h.instance_id:
        attempts = [*attempts[:-1], attempts[-1].model_copy(update={"dph_total": float(real)})]
    return h.model_copy(update={"dph_total": float(real), "attempts": attempts})


def run_handle(target: str, run_id: str, h: VastHandle) -> RunHandle:
    """The handle with what the orchestrator counts cost from: the rented offer's price,
    since when the current instance bills, and what the instances before it cost."""
    current = h.attempts[-1] if h.attempts else None
    spent = sum((a.cost(a.end) for a in h.attempts if a.end is not None), Decimal(0))
    return RunHandle(
        target=target,
        run_id=run_id,
        data=h.model_dump(),
        price_per_hour=Decimal(str(h.dph_total)),
        spent_usd=spent.quantize(Decimal("0.000001")),
        billed_since=datetime.fromtimestamp(current.start, UTC) if current else None,
    )


def unpacked_bundle(bundle: Path, digest: str) -> Path:
    """The bundle extracted (and verified) beside its archive, once per digest."""
    dest = bundle.with_name(f"{digest[:32]}.d")
    if not dest.is_dir():
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            extract_bundle(bundle, tmp)
            os.replace(tmp, dest)
        except OSError:  # another launcher unpacked it first
            if not dest.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def upload(conn: SshConn, h: VastHandle, notify: Callable[[str], None]) -> None:
    """Push the bundle, the inputs and any checkpoints to resume from, each by manifest diff
    (a retried upload sends only what is missing or different; every file sent is hash-checked
    on the instance), then write agent.json."""
    root = h.root
    conn.check(f"mkdir -p {root}/{agent_mod.BUNDLE} {root}/{agent_mod.CHECKPOINTS}")
    unpacked = h.bundle_dir or unpacked_bundle(Path(h.bundle_path), h.bundle_digest)
    pushes = [(agent_mod.BUNDLE, _every_file(Path(unpacked)))]
    for name, src in sorted(h.inputs.items()):
        path = Path(src)
        files = _every_file(path) if path.is_dir() else {path.name: path}
        pushes.append((f"{INPUTS}/{name}", files))
    if h.resume_from:
        for sub, base in _resume_sources(Path(h.resume_from)):
            files = tree_files(base)
            if sub == agent_mod.CHECKPOINTS:
                files = {p: f for p, f in files.items() if p.split("/")[0] not in h.resume_skip}
            pushes.append((sub, files))
    for sub, files in pushes:
        done = push_tree(files, SftpDest(conn, f"{root}/{sub}"))
        if sub != agent_mod.BUNDLE or done.sent:
            notify(
                f"uploaded {sub}: {len(done.sent)} file(s), {done.bytes_sent / 1e6:.1f} MB "
                f"({done.skipped_unchanged} already there)"
            )
    config = dict(h.agent, input_dir=f"{root}/{INPUTS}")
    conn.write_bytes(f"{root}/agent.json", json.dumps(config, indent=1).encode())


def _every_file(root: Path) -> dict[str, Path]:
    """Every regular file under `root`, hidden ones included (a bundle's or an input's own
    dotfiles are content; `tree_files` would skip them as unfinished writes)."""
    return {f.path: root / f.path for f in LocalTree(root).list_files()}


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED_DIRS or path == agent_mod.STATUS_FILE


def _snapshot(path: str) -> bool:
    return path.startswith(agent_mod.METRICS_SNAPSHOTS + "/")


def pull_workspace(conn: SshConn, h: VastHandle, dest: Path) -> PullResult:
    """Bring outputs, checkpoints, logs and status.json home (`pull_tree`: only what changed,
    verified, atomic). Metrics snapshots come first: a pull cut short by a pre-emption must not
    leave a checkpoint here without the snapshot a resume from it needs."""
    tree = SftpTree(conn, h.root)
    snaps = pull_tree(tree, dest, include=_snapshot)
    result = pull_tree(tree, dest, include=lambda p: _pulled(p) and not _snapshot(p))
    result.copied += snaps.copied
    result.bytes_copied += snaps.bytes_copied
    result.skipped_unchanged += snaps.skipped_unchanged
    result.changed_during_copy += snaps.changed_during_copy
    return result


def _resume_sources(base: Path) -> list[tuple[str, Path]]:
    """A run's pulled folder (checkpoints/ and outputs/ go back up), or a bare checkpoints
    folder (`--resume-from`)."""
    if (base / agent_mod.CHECKPOINTS).is_dir() or (base / agent_mod.OUTPUTS).is_dir():
        return [
            (sub, base / sub)
            for sub in (agent_mod.CHECKPOINTS, agent_mod.OUTPUTS)
            if (base / sub).is_dir()
        ]
    return [(agent_mod.CHECKPOINTS, base)]


def start_agent(conn: SshConn, h: VastHandle) -> None:
    root = h.root
    values = {n: os.environ[n] for n in h.secrets if n in os.environ}
    if values:  # a 0600 file the start script reads and deletes: never in argv or bundle
        lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
        conn.write_bytes(f"{root}/.secrets", lines.encode(), mode=0o600)
    script = (
        f"cd {root} && echo $$ > {root}/agent.pid && "
        f"if [ -f {root}/.secrets ]; then . {root}/.secrets; rm -f {root}/.secrets; fi; "
        f"exec python3 {root}/{agent_mod.BUNDLE}/agent.py --root {root} "
        f"--config {root}/agent.json"
    )
    conn.start_detached(script, log=f"{root}/agent.out")


def agent_status(conn: SshConn, h: VastHandle) -> dict[str, Any]:
    raw = conn.read_from(f"{h.root}/{agent_mod.STATUS_FILE}", 0)
    try:
        data: object = json.loads(raw) if raw else None
    except ValueError:
        return {}
    return cast("dict[str, Any]", data) if isinstance(data, dict) else {}


def agent_alive(conn: SshConn, h: VastHandle) -> bool:
    code, _out, _err = conn.run(f"kill -0 $(cat {h.root}/agent.pid) 2>/dev/null", timeout=30)
    return code == 0


def signal_agent(conn: SshConn, h: VastHandle, sig: str, control: bool) -> None:
    """Send the agent `sig`; with `control`, also write the stop request it polls for."""
    if control:  # reaches the agent even if the signal cannot
        conn.write_bytes(f"{h.root}/{agent_mod.CONTROL_FILE}", b'{"desired": "stop"}')
    conn.run(f"kill -{sig} $(cat {h.root}/agent.pid) 2>/dev/null", timeout=30)
    if sig == "KILL":  # the workload runs in its own session
        pid = agent_status(conn, h).get("pid")
        if isinstance(pid, int):
            conn.run(f"kill -KILL -- -{pid} 2>/dev/null", timeout=30)
