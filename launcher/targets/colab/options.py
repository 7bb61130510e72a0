"""Options of the Colab target (a generated notebook, run through Google Drive)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from launcher.spec_base import StrictModel


class ColabOptions(StrictModel):
    gpu: Annotated[
        Literal["T4", "L4", "A100", "H100"],
        Field(description="Colab GPU runtime to ask for (free tier: usually T4 only)."),
    ] = "T4"
    session_hours: Annotated[
        float,
        Field(
            gt=0,
            le=24,
            description="Hours one Colab session may run: 12 on the free tier, up to 24 with "
            "Pro+ background execution. The job checkpoints before it; the next session (you "
            "open the link again) goes on from there.",
        ),
    ] = 12
    max_sessions: Annotated[
        int,
        Field(
            ge=1,
            le=100,
            description="Sessions one run may use: each disconnect, idle reclaim or session "
            "cap ends one, and the next starts when you open its link.",
        ),
    ] = 5
    requirements: Annotated[
        str | None,
        Field(
            description="Requirements file the notebook installs over Colab's own Python "
            "(Colab cannot run the image): a file of the image folder, or for a registry "
            "image a path from the project root (default: what the image has installed).",
            # None: requirements-cpu.txt for a job without a GPU when the folder has one
            pattern=r"^[A-Za-z0-9._/-]+\.txt$",
        ),
    ] = None
    keep: Annotated[
        bool,
        Field(
            description="Keep each session's Drive folder (notebook, bundle, outputs) after the "
            "run instead of moving it to Drive's trash; outputs are pulled home either way.",
        ),
    ] = False
    sync_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="How often the notebook copies logs, status and new checkpoints to "
            "Drive (and reads a stop request from it); the job's first lines go at once.",
        ),
    ] = 15
    lost_after_minutes: Annotated[
        float,
        Field(
            gt=0,
            description="A session whose heartbeat on Drive is older than this is lost "
            "(disconnected, reclaimed while idle, or at its cap). Drive's own sync may lag by "
            "minutes: keep it well above sync_seconds.",
        ),
    ] = 10
    open_within_hours: Annotated[
        float,
        Field(
            gt=0,
            description="A session whose notebook nobody opened this long ends the run (failed): "
            "the link was missed, or the notebook could not find its folder.",
        ),
    ] = 24
