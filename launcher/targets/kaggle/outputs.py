"""Reading what a kernel session leaves: its /kaggle/working files, its log, its state archive.

Kaggle lists a session's /kaggle/working once the session has ended (ListKernelSessionOutput,
file URLs without auth); the files are downloaded once into a cache folder per kernel, checked
against Content-Length, and handed to `pull_tree` as a local tree: the copy into the run folder is
then verified and atomic like every other target's.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, cast

from launcher import agent as agent_mod
from launcher.targets.base import LogLine
from launcher.targets.kaggle.client import KaggleClient, rows

DONE_MARK = ".complete"  # hidden: pull_tree skips it
STATE_DIRS = (agent_mod.CHECKPOINTS, agent_mod.OUTPUTS, agent_mod.LOGS)


def list_output(client: KaggleClient, owner: str, slug: str) -> tuple[list[dict[str, str]], str]:
    """Every output file ({url, fileName}) of the kernel's latest session, and its log text."""
    files: list[dict[str, str]] = []
    token = ""
    log = ""
    for _page in range(1000):
        resp = client.call(
            "kernels",
            "list_kernel_session_output",
            {"userName": owner, "kernelSlug": slug, "pageSize": 100, "pageToken": token},
        )
        files.extend(cast("list[dict[str, str]]", resp.get("files") or []))
        log = str(resp.get("log") or log)
        token = str(resp.get("nextPageToken") or "")
        if not token:
            break
    return files, log


def fetch_outputs(client: KaggleClient, owner: str, slug: str, cache: Path) -> Path:
    """Download an ended session's outputs into `cache` once; the folder."""
    if (cache / DONE_MARK).is_file():
        return cache
    files, _log = list_output(client, owner, slug)
    for f in files:
        rel = PurePosixPath(f["fileName"])
        if rel.is_absolute() or ".." in rel.parts:  # as the kaggle CLI refuses them
            continue
        dest = cache.joinpath(*rel.parts)
        client.download(f["url"], dest)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / DONE_MARK).write_text(str(time.time()))
    return cache


def read_status(cache: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((cache / agent_mod.STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cast("dict[str, Any]", data) if isinstance(data, dict) else None


def log_entries(log: str) -> list[dict[str, Any]]:
    """Kaggle's log: a JSON array of {stream_name, time, data}; [] when unreadable."""
    try:
        data: Any = json.loads(log) if log else []
    except ValueError:
        return []
    return rows({"log": data}, "log")


def to_lines(entries: list[dict[str, Any]]) -> list[LogLine]:
    """Kaggle's log entries as the agent's lines: the agent echoes the job's stdout and stderr
    as they are, and its own lines to stderr as "[agent] ..."."""
    at = agent_mod.utc_now()
    lines: list[LogLine] = []
    for e in entries:
        for text in str(e.get("data") or "").splitlines():
            if e.get("stream_name") == "stdout":
                lines.append(LogLine(at=at, stream="out", text=text))
            elif text.startswith("[agent] "):
                lines.append(LogLine(at=at, stream="agent", text=text[len("[agent] ") :]))
            else:
                lines.append(LogLine(at=at, stream="err", text=text))
    return lines


def state_archive(run_dir: Path, dest: Path, dirs: tuple[str, ...] = STATE_DIRS) -> str:
    """Pack the pulled checkpoints/, outputs/ and logs/ of a run folder for the next session;
    the archive's sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in dirs:
            folder = run_dir / name
            if folder.is_dir():
                tar.add(folder, arcname=name)
    tmp.replace(dest)
    h = hashlib.sha256()
    with dest.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
