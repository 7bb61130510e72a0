"""The agent contract as targets see it: what they ship with a job (the bundle, the agent's
configuration) and how they read what the agent writes back (status.json, logs/job.log).

Kept in one place so every target hands the agent the same contract and reads its answers the
same way (DESIGN.md, "The agent").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher import agent as agent_mod
from launcher.bundle import Bundle, build_bundle
from launcher.inputs import FetchItem
from launcher.targets.base import AgentConfig, LogLine, Notify, Phase, Target, TargetStatus

if TYPE_CHECKING:
    from launcher.spec import JobSpec


def job_bundle(spec: JobSpec, home: Path, notify: Callable[[str], None]) -> Bundle:
    """Bundle the workload with the agent, launchkit and the resolved spec; tell the user what
    was left out as a likely secret and any size warning."""
    job_json = json.dumps(spec.resolved_dict(), sort_keys=True, indent=1)
    from launcher import launch_fetch, launchkit

    bundle = build_bundle(
        spec.workload_path,
        home / "bundles",
        {
            "agent.py": Path(agent_mod.__file__).read_bytes(),
            # the job author's helper; the agent puts this folder on the job's PYTHONPATH
            "launchkit.py": Path(launchkit.__file__).read_bytes(),
            # what the agent runs to download the inputs the machine fetches itself
            "launch_fetch.py": Path(launch_fetch.__file__).read_bytes(),
            "job.json": job_json.encode(),
        },
    )
    for skipped in bundle.skipped_secrets:
        notify(f"left out of the bundle (looks like a secret): {skipped}")
    for warning in bundle.warnings:
        notify(warning)
    return bundle


def agent_config(spec: JobSpec, inputs: JobInputs | None = None) -> AgentConfig:
    """The job-level part of agent.json; targets add the attempt's part at submit."""
    limits = spec.limits
    return AgentConfig(
        command=spec.run,
        env=dict(spec.env),
        time_limit_s=limits.max_hours * 3600 if limits.max_hours else None,
        # stop early enough that a platform's cap ends in a checkpoint, not a kill
        stop_margin_s=min(60.0, limits.grace_seconds * 2),
        grace_s=limits.grace_seconds,
        heartbeat_s=2,
        fetch=inputs.fetch if inputs else [],
        fetch_only_env=inputs.fetch_only_env if inputs else [],
    )


def job_inputs(spec: JobSpec, target: type[Target[Any, Any]], notify: Notify) -> JobInputs:
    """Resolve the job's inputs on `target` (refusing what it cannot deliver, before anything is
    started) and do the local part: download what is fetched here. Local folders to mount or
    upload, and what the machine fetches itself with which credentials, are in the answer."""
    from launcher.inputs import Way, fetch_here, pin_versions, resolve

    res = resolve(spec, target.input_ways, target.name)
    res.raise_problems()
    pin_versions(res)  # every attempt, on any machine, gets the dataset version of this run
    local = {
        d.name: str(d.local_path)
        for d in res.with_way(Way.MOUNT, Way.UPLOAD, Way.PRIVATE_DATASET, Way.DRIVE)
    }
    local.update(fetch_here(res.with_way(Way.FETCH_HERE), notify))
    there = [d.fetch for d in res.with_way(Way.FETCH_THERE) if d.fetch is not None]
    return JobInputs(
        local=local,
        fetch=there,
        fetch_only_env=[n for n in res.secrets if n not in spec.secrets],
        platform=[d.ref for d in res.with_way(Way.PLATFORM) if d.ref],
    )


class JobInputs(BaseModel):
    local: dict[str, str]  # name -> a folder here (mounted, uploaded, or a private dataset)
    fetch: list[FetchItem]  # what the machine downloads itself, for the agent
    fetch_only_env: list[str]  # credentials the machine needs for `fetch` alone
    platform: list[str]  # sources the platform attaches (Kaggle dataset refs)


class AgentStatus(BaseModel):
    """The agent's status.json (launcher/agent.py `new_status`), read leniently: an agent of
    another version, or a file that could not be read ({}), still gives an answer."""

    model_config = ConfigDict(extra="ignore")

    phase: str | None = None  # "starting" | "running" | "stopping" | "exited"
    attempt: int | None = None
    pid: int | None = None
    pid_start: str | None = None  # the workload's /proc starttime (None from older agents)
    exit_code: int | None = None
    stop_reason: str | None = None  # "signal" | "control" | "time_limit"
    error: str | None = None  # why the agent itself could not run the workload
    started_at: str | None = None
    heartbeat_at: datetime | None = None
    ended_at: str | None = None
    last_checkpoint: str | None = None
    last_metrics: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> AgentStatus:
        """From the file's bytes; an empty status when they are missing or not a status."""
        try:
            return cls.model_validate_json(raw) if raw else cls()
        except ValidationError:
            return cls()

    @classmethod
    def read(cls, path: Path) -> AgentStatus:
        try:
            return cls.parse(path.read_bytes())
        except OSError:
            return cls()


def agent_phase(st: AgentStatus, alive: bool) -> TargetStatus:
    """The attempt's phase from the agent's status.json and whether the agent process still
    lives. Exiting after a stop request is STOPPED even with code 0: the job was asked to end
    early."""
    common: dict[str, Any] = {
        "heartbeat_at": st.heartbeat_at,
        "last_checkpoint": st.last_checkpoint,
        "last_metrics": st.last_metrics,
        "stop_reason": st.stop_reason,
    }
    if st.phase == "exited":
        code = st.exit_code
        message = st.error or ""
        if st.stop_reason:
            return TargetStatus(phase=Phase.STOPPED, exit_code=code, message=message, **common)
        if code == 0:
            return TargetStatus(phase=Phase.DONE, exit_code=0, **common)
        return TargetStatus(
            phase=Phase.FAILED, exit_code=code, message=message or f"exit code {code}", **common
        )
    if not alive:
        return TargetStatus(phase=Phase.LOST, message="the agent died without a word", **common)
    if st.phase in ("running", "stopping"):
        return TargetStatus(phase=Phase.RUNNING, **common)
    return TargetStatus(phase=Phase.STARTING, **common)


def parse_log_chunk(chunk: bytes) -> tuple[list[LogLine], int]:
    """The whole lines of a piece of logs/job.log, and how many bytes they took (a trailing
    partial line is left for the next read)."""
    end = chunk.rfind(b"\n") + 1
    lines: list[LogLine] = []
    # split on "\n" only: the agent ends lines there, and text may hold \x0c or \u2028
    for raw in chunk[: end - 1].decode("utf-8", "replace").split("\n") if end else ():
        parsed = agent_mod.parse_log_line(raw)
        if parsed is not None:
            lines.append(LogLine(at=parsed[0], stream=parsed[1], text=parsed[2]))
    return lines, end


def session_cap_or_limit(
    st: TargetStatus,
    *,
    attempt: int,
    session_s: float,
    job_left_s: float | None,
    stop_margin_s: float,
    ran_s: float,
) -> TargetStatus:
    """An attempt the agent (or the platform) stopped at a time limit on a platform with a
    session cap (Kaggle, Colab): was it the session's cap, with the job's own time left
    (PREEMPTED: the next session goes on from the checkpoint), or the job's limit?"""
    if st.phase is not Phase.STOPPED or st.stop_reason != "time_limit":
        return st
    margin = stop_margin_s + 1.0
    if job_left_s is not None and ran_s >= job_left_s - 2 * margin:
        return st  # the job used its own limit
    why = st.message or f"session {attempt} reached the session cap ({session_s / 3600:g} h)"
    return st.model_copy(
        update={"phase": Phase.PREEMPTED, "stop_reason": "session_cap", "message": why}
    )


def seconds_between(start: Any, end: Any) -> float:
    """Seconds from one agent timestamp (ISO, Z) to another; 0 when either is missing."""
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (b - a).total_seconds())
