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
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field

from launcher import agent as agent_mod
from launcher.attempts import resume_sources
from launcher.bundle import extract_bundle
from launcher.inputs import fetch_secret_values
from launcher.progress import Meter, MeterFactory
from launcher.sync import LocalTree, PullResult, pull_tree, push_tree
from launcher.targets.base import AttemptSpec, Handle, Prepared
from launcher.targets.jobfiles import AgentStatus
from launcher.targets.vast.client import VastInstance
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.sftp import SftpDest
from launcher.targets.vast.ssh import SshConn
from launcher.targets.vast.stream import ShellTree

REMOTE_ROOT = "/workspace/launch"
INPUTS = "inputs"
PULLED_DIRS = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


class VastPrepared(Prepared):
    image: str  # the reference Vast pulls
    query: dict[str, Any]  # the offer search, in Vast's own terms (offers.offer_query)
    options: VastOptions
    disk_gb: float = 10.0
    inputs: dict[str, str] = Field(default_factory=dict[str, str])  # name -> local path
    bundle_dir: str = ""  # the bundle unpacked here, pushed file by file (only changes move)


class VastHandle(Handle):
    """One rented instance and how far the job on it has come."""

    instance_id: int
    offer_id: int
    label: str
    dph_total: float  # the instance's own figure once it shows one (an interruptible's bid)
    gpu: str = ""  # "1x RTX 4090", as the offer said
    tried: list[int] = Field(default_factory=list[int])  # offer ids, over every attempt
    root: str = REMOTE_ROOT
    host_key: str | None = None  # pinned on the first connection
    key_attached: bool = False
    uploaded: bool = False
    started: bool = False
    resume_from: str | None = None  # local run folder or checkpoints the job starts from
    resume_skip: list[str] = Field(default_factory=list[str])
    time_left_s: float | None = None  # of the job's time limit, for this attempt's agent


def with_real_price(h: VastHandle, row: VastInstance) -> VastHandle:
    """The instance's own dph_total, once it shows one: an interruptible instance bills our
    bid (5% over the floor the offer showed), plus storage."""
    real = row.dph_total
    if not real or real == h.dph_total:
        return h
    return h.model_copy(update={"dph_total": real, "price_per_hour": Decimal(str(real))})


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


def upload(
    conn: SshConn,
    prepared: VastPrepared,
    h: VastHandle,
    notify: Callable[[str], None],
    meter: MeterFactory,
) -> None:
    """Push the bundle, the inputs and any checkpoints to resume from, each by manifest diff
    (a retried upload sends only what is missing or different; every file sent is hash-checked
    on the instance), then write agent.json."""
    root = h.root
    conn.check(f"mkdir -p {root}/{agent_mod.BUNDLE} {root}/{agent_mod.CHECKPOINTS}")
    unpacked = prepared.bundle_dir or unpacked_bundle(prepared.bundle_path, prepared.bundle_digest)
    pushes = [(agent_mod.BUNDLE, _every_file(Path(unpacked)))]
    for name, src in sorted(prepared.inputs.items()):
        path = Path(src)
        files = _every_file(path) if path.is_dir() else {path.name: path}
        pushes.append((f"{INPUTS}/{name}", files))
    if h.resume_from:
        pushes += list(resume_sources(Path(h.resume_from), h.resume_skip).items())
    for sub, files in pushes:
        done = push_tree(files, SftpDest(conn, f"{root}/{sub}"), meter=meter(f"upload {sub}"))
        if sub != agent_mod.BUNDLE or done.sent:
            notify(
                f"uploaded {sub}: {len(done.sent)} file(s), {done.bytes_sent / 1e6:.1f} MB "
                f"({done.skipped_unchanged} already there)"
            )
    attempt = AttemptSpec(number=h.attempt, time_left_s=h.time_left_s)
    config = prepared.agent.for_attempt(prepared.run_id, attempt, f"{root}/{INPUTS}")
    conn.write_bytes(f"{root}/agent.json", json.dumps(config, indent=1).encode())


def _every_file(root: Path) -> dict[str, Path]:
    """Every regular file under `root`, hidden ones included (a bundle's or an input's own
    dotfiles are content; `tree_files` would skip them as unfinished writes)."""
    return {f.path: root / f.path for f in LocalTree(root).list_files()}


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED_DIRS or path == agent_mod.STATUS_FILE


def _snapshot(path: str) -> bool:
    return path.startswith(agent_mod.METRICS_SNAPSHOTS + "/")


def pull_workspace(
    conn: SshConn, h: VastHandle, dest: Path, meter: Meter | None = None
) -> PullResult:
    """Bring outputs, checkpoints, logs and status.json home (`pull_tree` over one stream: only
    what changed, verified, atomic). Metrics snapshots come first: a pull cut short by a
    pre-emption must not leave a checkpoint here without the snapshot a resume from it needs. A
    pull cut by a dropped connection keeps what it installed: the next one goes on from there."""
    tree = ShellTree(conn, h.root)
    return pull_tree(tree, dest, include=_pulled, first=_snapshot, meter=meter)


def start_agent(conn: SshConn, prepared: VastPrepared, h: VastHandle) -> None:
    root = h.root
    values = {n: os.environ[n] for n in prepared.secrets if n in os.environ}
    fetch_env = fetch_secret_values(prepared.agent.fetch_only_env)
    if fetch_env:  # the agent reads it and deletes it, and keeps it from every environment
        path = f"{root}/{agent_mod.FETCH_ENV_FILE}"
        conn.write_bytes(path, json.dumps(fetch_env).encode(), mode=0o600)
    if values:  # a 0600 file the start script reads and deletes: never in argv or bundle
        lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
        conn.write_bytes(f"{root}/.secrets", lines.encode(), mode=0o600)
    # SSH sessions get sshd's PATH, not the image's: find python3 where the image has it
    path = prepared.agent.image_env.get("PATH")
    script = (
        (f"export PATH={shlex.quote(path)}; " if path else "")
        + f"cd {root} && echo $$ > {root}/agent.pid && "
        f"if [ -f {root}/.secrets ]; then . {root}/.secrets; rm -f {root}/.secrets; fi; "
        f"exec python3 {root}/{agent_mod.BUNDLE}/agent.py --root {root} "
        f"--config {root}/agent.json"
    )
    conn.start_detached(script, log=f"{root}/agent.out")


def agent_status(conn: SshConn, h: VastHandle) -> AgentStatus:
    return AgentStatus.parse(conn.read_from(f"{h.root}/{agent_mod.STATUS_FILE}", 0))


def agent_alive(conn: SshConn, h: VastHandle) -> bool:
    code, _out, _err = conn.run(f"kill -0 $(cat {h.root}/agent.pid) 2>/dev/null", timeout=30)
    return code == 0


def signal_agent(conn: SshConn, h: VastHandle, sig: str, control: bool) -> None:
    """Send the agent `sig`; with `control`, also write the stop request it polls for."""
    if control:  # reaches the agent even if the signal cannot
        conn.write_bytes(f"{h.root}/{agent_mod.CONTROL_FILE}", b'{"desired": "stop"}')
    conn.run(f"kill -{sig} $(cat {h.root}/agent.pid) 2>/dev/null", timeout=30)
    if sig == "KILL":  # the workload runs in its own session
        pid = agent_status(conn, h).pid
        if pid is not None:
            conn.run(f"kill -KILL -- -{pid} 2>/dev/null", timeout=30)
