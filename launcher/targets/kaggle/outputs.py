"""What a kernel session leaves: its /kaggle/working files and its log.

Kaggle lists a session's /kaggle/working once the session has ended (ListKernelSessionOutput,
file URLs without auth); the files are downloaded once into a cache folder per kernel, checked
against Content-Length, and handed to `pull_tree` as a local tree: the copy into the run folder is
then verified and atomic like every other target's.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any

from launcher import agent as agent_mod
from launcher.progress import Meter
from launcher.targets.base import LogLine
from launcher.targets.jobfiles import AgentStatus
from launcher.targets.kaggle.client import KaggleClient, LogEntry, log_entries, rows

DONE_MARK = ".complete"  # hidden: pull_tree skips it

# What the kernel says first (kernel.py): the id of its session, which CancelKernelSession takes
# and which Kaggle names nowhere but inside the kernel (no push, status or list answer carries
# it; kagglesdk 0.1.38 types). The kernel reads it from KAGGLE_CONTAINER_NAME [3rd-party code
# reads the session id from that name's digits; unverified against Kaggle].
SESSION_LINE = re.compile(r"\[agent\] kaggle: kernel session (\d+)")


def fetch_outputs(
    client: KaggleClient, owner: str, slug: str, cache: Path, meter: Meter | None = None
) -> Path:
    """Download an ended session's outputs into `cache` once; the folder. (Kaggle lists no
    sizes: the meter counts bytes against an unknown total.)"""
    if (cache / DONE_MARK).is_file():
        return cache
    files, _log = client.session_output(owner, slug)
    if meter is not None:
        meter.start(0, len(files))
    try:
        for f in files:
            rel = PurePosixPath(f.name)
            if not f.name or rel.is_absolute() or ".." in rel.parts:  # as the kaggle CLI refuses
                continue
            client.download(
                f.url, cache.joinpath(*rel.parts), meter.advance if meter is not None else None
            )
    finally:
        if meter is not None:
            meter.finish()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / DONE_MARK).write_text(str(time.time()))
    return cache


def read_status(cache: Path) -> AgentStatus | None:
    """The agent's status.json among a session's outputs; None when it left none."""
    path = cache / agent_mod.STATUS_FILE
    return AgentStatus.read(path) if path.is_file() else None


def parse_log(log: str) -> list[LogEntry]:
    """Kaggle's log as ListKernelSessionOutput gives it (a JSON array); [] when unreadable."""
    try:
        data: Any = json.loads(log) if log else []
    except ValueError:
        return []
    return log_entries(rows({"log": data}, "log"))


def session_id(entries: list[LogEntry]) -> int | None:
    """The kernel session id the kernel said in its log (the first such line), if it has."""
    for e in entries:
        if e.stream_name == "stdout":
            continue  # the kernel says it on stderr, before the job starts
        for text in e.data.splitlines():
            m = SESSION_LINE.fullmatch(text.strip())
            if m:
                return int(m.group(1))
    return None


def to_lines(entries: list[LogEntry]) -> list[LogLine]:
    """Kaggle's log entries as the agent's lines: the agent echoes the job's stdout and stderr
    as they are, and its own lines to stderr as "[agent] ..."."""
    at = agent_mod.utc_now()
    lines: list[LogLine] = []
    for e in entries:
        for text in e.data.splitlines():
            if e.stream_name == "stdout":
                lines.append(LogLine(at=at, stream="out", text=text))
            elif text.startswith("[agent] "):
                lines.append(LogLine(at=at, stream="agent", text=text[len("[agent] ") :]))
            else:
                lines.append(LogLine(at=at, stream="err", text=text))
    return lines
