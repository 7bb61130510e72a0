"""What a Colab run keeps (its prepared job, one handle per session) and the names it gives
things in Drive.

Every session gets its own folder in the user's Drive, under one "launch" folder:

    My Drive/launch/<run id>-s<N>/
        <run id>-s<N>.ipynb   the notebook the user opens (Colab's MIME type, GPU preselected)
        bundle.tar.gz         the workload, the agent, launchkit (sha256 in job.json)
        job.json              what the notebook runs: the agent's settings, requirements, the
                              NAMES of secrets (never a value), the session's limits
        control.json          {"desired": "run" | "stop"}: `launch cancel` writes it
        state.tar.gz          a resumed session's checkpoints and outputs (sha256 in job.json)
        run/                  written by the notebook: status.json, heartbeat.json, logs/,
                              outputs/, checkpoints/ (the agent's workspace, copied over)

Folders and files are addressed by id, never by title (Drive allows duplicate titles). The
notebook finds its folder by path under the mounted Drive, and checks the folder id in job.json.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from launcher.targets.base import Handle, Prepared

ROOT_TITLE = "launch"
INPUTS_TITLE = "inputs"  # My Drive/launch/inputs: packed input folders, kept for later runs
RUN_DIR = "run"  # the agent's workspace, as the notebook copies it to Drive
JOB_FILE = "job.json"
CONTROL_FILE = "control.json"
BUNDLE_FILE = "bundle.tar.gz"
STATE_FILE = "state.tar.gz"
HEARTBEAT_FILE = "heartbeat.json"  # the notebook's own, while it installs and runs the agent
NOTEBOOK_MIME = "application/vnd.google.colaboratory"
FOLDER_MIME = "application/vnd.google-apps.folder"
_TITLE = re.compile(r"(\S+)-s(\d+)")


def folder_title(run_id: str, session: int) -> str:
    return f"{run_id}-s{session}"


def run_of_title(title: str) -> str | None:
    m = _TITLE.fullmatch(title.strip())
    return m.group(1) if m else None


def folder_description(run_id: str, session: int, home: str, kept: bool = False) -> str:
    """The folder's description: which run, and which launch home made it (`launch gc` of
    another machine or home leaves it alone); "kept" when the run ended and left it there."""
    return f"launch run {run_id} session {session} home {home}" + (" kept" if kept else "")


def home_of_description(description: str) -> tuple[str, bool] | None:
    """(home, kept) of a folder launch made; None for any other folder."""
    m = re.fullmatch(r"launch run \S+ session \d+ home (\S+)( kept)?", description.strip())
    return (m.group(1), bool(m.group(2))) if m else None


class NotebookJob(BaseModel):
    """The job's part of every session's job.json (see notebook.py). Holds NAMES of secrets,
    never values."""

    model_config = ConfigDict(extra="ignore")

    requirements: list[dict[str, str]] = Field(default_factory=list[dict[str, str]])
    pip_options: list[str] = Field(default_factory=list[str])
    secrets: list[str] = Field(default_factory=list[str])
    session_s: float
    safety_s: float  # the notebook's own start and the last copy to Drive fit in the session
    sync_s: float
    lost_after_s: float = 600.0  # the folder gone this long: the run ended, the job stops
    # local input folders, packed: (as, file in My Drive/launch/inputs, sha256), unpacked first
    packed: list[tuple[str, str, str]] = Field(default_factory=list[tuple[str, str, str]])


class SessionJob(NotebookJob):
    """job.json: what one session's notebook runs (read by the notebook program)."""

    folder_id: str
    run_id: str
    session: int
    agent: dict[str, Any]  # the agent's agent.json for this session (AgentConfig.for_attempt)
    bundle_sha256: str
    state_sha256: str | None = None
    job_left_s: float | None = None
    gpu: str | None = None


class NotebookConfig(BaseModel):
    """What the notebook itself holds: enough to find its folder in the mounted Drive."""

    run_id: str
    session: int
    folder_title: str
    folder_id: str
    root_title: str = ROOT_TITLE
    session_s: float = 12 * 3600.0


class PackedDriveInput(BaseModel):
    name: str
    archive: str  # here
    file: str  # its title in My Drive/launch/inputs (named after the content)
    sha256: str


class ColabPrepared(Prepared):
    job: str
    notebook: NotebookJob
    packed: list[PackedDriveInput] = Field(default_factory=list[PackedDriveInput])
    gpu: str | None = None  # None: a CPU runtime
    keep: bool = False
    lost_after_s: float = 600.0
    open_within_s: float = 24 * 3600.0


class ColabHandle(Handle):
    """One session of a run: its Drive folder, and the notebook the user opens."""

    folder_title: str
    folder_id: str | None = None
    notebook_id: str | None = None
    control_id: str | None = None
    link: str = ""
    submitted_at: float = 0.0  # epoch seconds
    job_left_s: float | None = None  # of the job's time limit, when this session started
    session_s: float = 12 * 3600.0
    stop_margin_s: float = 60.0
    sync_s: float = 15.0
    lost_after_s: float = 600.0
    open_within_s: float = 24 * 3600.0
    keep: bool = False
