"""Where a Colab session is, read from its Drive folder.

The notebook writes run/heartbeat.json on its own clock and copies the agent's status.json, log
and files; nothing else tells the launcher about the session. So:

- no heartbeat yet: QUEUED, waiting for the user to open the link (FAILED after
  `open_within_s`: nobody did, or the notebook could not find its folder);
- a heartbeat, status.json not "exited": STARTING / RUNNING; LOST when nothing in run/ changed
  for `lost_after_s` as this process saw it (a closed tab, a disconnect, an idle reclaim, the
  cap). Measured on this machine's clock, so a skewed clock on either side cannot make a live
  session look lost; a fresh process (gc, a restarted launcher) waits that long before it
  calls a session lost;
- "exited": how the job ended, once the notebook's final heartbeat ("ended") and every file its
  manifest lists are in Drive (the mount sends files in no set order); a folder whose last files
  never arrived is kept (`Watch.complete`);
- Drive unreachable: the last answer stands, LOST when it stays unreachable for `lost_after_s`.

`Watch` holds what one process saw (short-lived caches); the stored handle stays the truth.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from launcher import agent as agent_mod
from launcher.errors import TargetError
from launcher.targets.base import Phase
from launcher.targets.base import TargetStatus as TS
from launcher.targets.colab import handle as names
from launcher.targets.colab.drive import Drive, DriveFile
from launcher.targets.colab.handle import ColabHandle
from launcher.targets.colab.tree import Manifest
from launcher.targets.jobfiles import (
    AgentStatus,
    agent_phase,
    seconds_between,
    session_cap_or_limit,
)


@dataclass
class Seen:
    """One look at a session's folder."""

    at: float
    gone: bool
    run_id: str | None = None  # the run/ folder's id
    run: dict[str, DriveFile] = field(default_factory=dict[str, DriveFile])  # run/'s files
    status: AgentStatus | None = None
    heartbeat: dict[str, Any] | None = None

    @property
    def manifest(self) -> Manifest:
        files: Any = (self.heartbeat or {}).get("files") or {}
        out: dict[str, tuple[int, int, str]] = {}
        for path, entry in cast("dict[str, Any]", files).items():
            if isinstance(entry, list) and len(cast("list[Any]", entry)) == 3:
                size, mtime, md5 = cast("list[Any]", entry)
                out[str(path)] = (int(size), int(mtime), str(md5))
        return out

    @property
    def settled(self) -> bool:
        """The notebook's last round is all in Drive: its final heartbeat, and every file that
        heartbeat lists at its size and md5."""
        if (self.heartbeat or {}).get("step") != "ended":
            return False
        for path, (size, _mtime, md5) in self.manifest.items():
            f = self.run.get(path)
            if f is None or f.size != size or (f.md5 and md5 and f.md5 != md5):
                return False
        return True

    @property
    def signature(self) -> tuple[Any, ...]:
        """Changes whenever the session shows a sign of life in Drive."""
        beat = (self.heartbeat or {}).get("at")
        newest = max((f.modified_ns for f in self.run.values()), default=0)
        return (beat, self.status.heartbeat_at if self.status else None, newest)


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None
    return cast("dict[str, Any]", data) if isinstance(data, dict) else None


class Watch:
    def __init__(self, drive: Drive, poll_s: float) -> None:
        self.drive, self.poll_s = drive, poll_s
        self._seen: dict[str, Seen] = {}
        self._alive: dict[str, tuple[tuple[Any, ...], float]] = {}  # signature, when it changed
        self._exited: dict[str, float] = {}  # when "exited" was first seen
        self._unreachable: dict[str, float] = {}  # since when Drive did not answer

    def look(self, h: ColabHandle, *, fresh: bool = False) -> Seen:
        """The folder as Drive shows it now (or within a poll period). Raises TargetError."""
        now = time.monotonic()
        key = h.folder_title
        seen = self._seen.get(key)
        if seen is not None and not fresh and now - seen.at < self.poll_s:
            return seen
        drive = self.drive
        folder = drive.get(h.folder_id) if h.folder_id else None
        if folder is None or folder.trashed:
            seen = Seen(at=now, gone=True)
        else:
            runs = [f for f in drive.children(folder.id, title=names.RUN_DIR) if f.is_folder]
            run = runs[0].id if runs else None
            files = drive.tree(run) if run else {}
            status = heartbeat = None
            if agent_mod.STATUS_FILE in files:
                status = AgentStatus.parse(drive.read_all(files[agent_mod.STATUS_FILE].id))
            if names.HEARTBEAT_FILE in files:
                heartbeat = _json(drive.read_all(files[names.HEARTBEAT_FILE].id))
            seen = Seen(now, False, run, files, status, heartbeat)
        self._seen[key] = seen
        old = self._alive.get(key)
        if old is None or old[0] != seen.signature:
            self._alive[key] = (seen.signature, now)
        return seen

    def forget(self, h: ColabHandle) -> None:
        for cache in (self._seen, self._alive, self._exited, self._unreachable):
            cache.pop(h.folder_title, None)

    def status(self, h: ColabHandle) -> TS:
        key = h.folder_title
        try:
            seen = self.look(h)
            self._unreachable.pop(key, None)
        except TargetError as e:
            since = self._unreachable.setdefault(key, time.monotonic())
            down = time.monotonic() - since
            if down > h.lost_after_s:
                return TS(phase=Phase.LOST, message=f"Drive unreachable for {down / 60:.1f} min")
            last = self._seen.get(key)
            base = self.judge(h, last) if last is not None else TS(phase=Phase.QUEUED)
            if base.finished:
                base = TS(phase=Phase.RUNNING)
            return base.model_copy(
                update={"message": f"Drive unreachable ({e.message}); retrying"}
            )
        return self.judge(h, seen)

    def judge(self, h: ColabHandle, seen: Seen) -> TS:
        key = h.folder_title
        if seen.gone:
            return TS(phase=Phase.LOST, message=f"the Drive folder of session {h.attempt} is gone")
        st, beat = seen.status, seen.heartbeat
        if st is None and beat is None:
            if time.time() - h.submitted_at > h.open_within_s:
                return TS(
                    phase=Phase.FAILED,
                    message=f"nobody opened {h.link} within {h.open_within_s / 3600:g} h "
                    "(targets.colab.open_within_hours)",
                )
            return TS(phase=Phase.QUEUED, message=f"waiting for you to open {h.link}")
        exited = st is not None and st.phase == "exited"
        if exited or (beat or {}).get("step") == "ended":
            first = self._exited.setdefault(key, time.monotonic())
            if not seen.settled and time.monotonic() - first < h.lost_after_s:
                why = f"session {h.attempt}: its last files are on their way to Drive"
                return TS(phase=Phase.RUNNING, message=why)
            if st is not None and exited:
                return self._ended(h, st)
            return TS(
                phase=Phase.FAILED,
                message=f"the notebook of session {h.attempt} ended without the job's status",
            )
        quiet = self._quiet(key)
        if quiet > h.lost_after_s:
            return TS(
                phase=Phase.LOST,
                message=f"Colab session {h.attempt} stopped answering {quiet / 60:.1f} min ago "
                "(the tab closed, a disconnect, an idle reclaim or the session cap)",
                heartbeat_at=st.heartbeat_at if st else None,
                last_checkpoint=st.last_checkpoint if st else None,
            )
        if st is None:
            step = str((beat or {}).get("step") or "starting")
            return TS(phase=Phase.STARTING, message=f"session {h.attempt}: {step}")
        return agent_phase(st, alive=True).model_copy(update={"message": f"session {h.attempt}"})

    def _ended(self, h: ColabHandle, st: AgentStatus) -> TS:
        ended = agent_phase(st, alive=False)
        if ended.phase is Phase.STOPPED and st.stop_reason == "control" and not st.started_at:
            return ended.model_copy(update={"message": "cancelled before it started"})
        return session_cap_or_limit(
            ended,
            attempt=h.attempt,
            session_s=h.session_s,
            job_left_s=h.job_left_s,
            stop_margin_s=h.stop_margin_s,
            ran_s=seconds_between(st.started_at, st.ended_at),
        )

    def _quiet(self, key: str) -> float:
        """Seconds since this process last saw the session change anything in Drive."""
        return time.monotonic() - self._alive.get(key, ((), time.monotonic()))[1]

    def complete(self, h: ColabHandle) -> bool:
        """May the folder go? Everything the notebook wrote is in Drive, or it wrote nothing,
        or it stopped writing long ago (a lost session: what is there is all there will be)."""
        seen = self.look(h, fresh=True)
        if seen.gone or seen.settled or (seen.status is None and seen.heartbeat is None):
            return True
        return self._quiet(h.folder_title) > h.lost_after_s
