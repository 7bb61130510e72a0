"""The run's workspace on the instance: what the target keeps about it, and what it runs there.

Layout under `REMOTE_ROOT` is the agent's (bundle/, outputs/, checkpoints/, logs/job.log,
status.json, control.json) plus `agent.pid`, written by the start script.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from launcher import agent as agent_mod
from launcher.errors import TargetError
from launcher.targets.vast.ssh import SshConn

REMOTE_ROOT = "/workspace/launch"


class VastHandle(BaseModel):
    instance_id: int
    offer_id: int
    label: str
    dph_total: float
    bundle_path: str
    bundle_digest: str
    agent: dict[str, Any]
    secrets: list[str] = []  # names; values are read from this shell when the agent starts
    resume_from: str | None = None  # local checkpoints the job starts from
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


def upload(conn: SshConn, h: VastHandle) -> None:
    """Ship the bundle (verified by its digest), unpack it, write agent.json."""
    root = h.root
    archive = f"{root}/bundle.tar.gz"
    conn.check(f"mkdir -p {root}/{agent_mod.BUNDLE} {root}/{agent_mod.CHECKPOINTS}")
    conn.upload(Path(h.bundle_path), archive)
    got = conn.check(f"sha256sum {archive}").split(" ", 1)[0]
    if got != h.bundle_digest:
        raise TargetError(f"the uploaded bundle does not match its digest (got {got})")
    conn.check(f"python3 -c {shlex.quote(_EXTRACT)} {archive} {root}/{agent_mod.BUNDLE}")
    config = dict(h.agent, input_dir=f"{root}/inputs")
    conn.write_bytes(f"{root}/agent.json", json.dumps(config, indent=1).encode())
    if h.resume_from:
        for sub, base in _resume_sources(Path(h.resume_from)):
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    dest = f"{root}/{sub}/{path.relative_to(base).as_posix()}"
                    conn.check(f"mkdir -p {shlex.quote(os.path.dirname(dest))}")
                    conn.upload(path, dest)


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
    secrets = {n: os.environ[n] for n in h.secrets if n in os.environ}
    if secrets:  # a 0600 file the start script reads and deletes: never in argv or bundle
        lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in secrets.items())
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


# Runs on the instance with its own python3: unpack the bundle, refusing unsafe members.
_EXTRACT = """
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t.getmembers():
        parts = m.name.split("/")
        if m.name.startswith("/") or ".." in parts or not (m.isreg() or m.isdir()):
            sys.exit("refusing bundle member " + m.name)
    t.extractall(sys.argv[2])
"""
