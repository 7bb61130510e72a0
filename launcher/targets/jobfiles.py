"""The agent contract as targets see it: what they ship with a job (the bundle, the agent's
configuration) and how they read what the agent writes back (status.json, logs/job.log).

Kept in one place so every target hands the agent the same contract and reads its answers the
same way (DESIGN.md, "The agent").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from launcher import agent as agent_mod
from launcher.bundle import Bundle, build_bundle
from launcher.errors import SubmitError, TargetUnavailableError
from launcher.targets.base import LogLine, Phase, TargetStatus


def job_bundle(spec: Any, home: Path, notify: Callable[[str], None]) -> Bundle:
    """Bundle the workload with the agent and the resolved spec; tell the user what was left
    out as a likely secret and any size warning."""
    job_json = json.dumps(spec.resolved_dict(), sort_keys=True, indent=1)
    bundle = build_bundle(
        spec.workload_path,
        home / "bundles",
        {"agent.py": Path(agent_mod.__file__).read_bytes(), "job.json": job_json.encode()},
    )
    for skipped in bundle.skipped_secrets:
        notify(f"left out of the bundle (looks like a secret): {skipped}")
    for warning in bundle.warnings:
        notify(warning)
    return bundle


def agent_config(spec: Any) -> dict[str, Any]:
    """The job-level part of agent.json; targets add run_id and input_dir at submit."""
    limits = spec.limits
    return {
        "command": spec.run,
        "workdir": "workload",
        "env": dict(spec.env),
        "time_limit_s": limits.max_hours * 3600 if limits.max_hours else None,
        # stop early enough that a platform's cap ends in a checkpoint, not a kill
        "stop_margin_s": min(60.0, limits.grace_seconds * 2),
        "grace_s": limits.grace_seconds,
        "heartbeat_s": 2,
    }


def local_inputs(spec: Any, target: str) -> dict[str, str]:
    """name -> absolute local path of each job input, for targets that ship local folders
    (mounted, or uploaded to $LAUNCH_INPUT_DIR/<name>). A Kaggle dataset input or a missing
    path is refused before anything is started."""
    inputs: dict[str, str] = {}
    for item in spec.inputs:
        if item.path is None:
            raise TargetUnavailableError(
                f"input '{item.name}' is a Kaggle dataset; the {target} target uses local folders",
                hint="download it and use `inputs: [{path: ..., as: ...}]`",
            )
        src = (spec.project_root / item.path).resolve()
        if not src.exists():
            raise SubmitError(f"input path {src} does not exist")
        inputs[item.name] = str(src)
    return inputs


def agent_phase(st: Mapping[str, Any], alive: bool) -> TargetStatus:
    """The run's phase from the agent's status.json (`st`; {} when unreadable) and whether the
    agent process still lives. Exiting after a stop request is STOPPED even with code 0: the job
    was asked to end early."""
    common: dict[str, Any] = {
        "heartbeat_at": st.get("heartbeat_at"),
        "last_checkpoint": st.get("last_checkpoint"),
        "last_metrics": st.get("last_metrics"),
        "stop_reason": st.get("stop_reason"),
    }
    phase = st.get("phase")
    if phase == "exited":
        code = st.get("exit_code")
        if st.get("stop_reason"):
            return TargetStatus(phase=Phase.STOPPED, exit_code=code, **common)
        if code == 0:
            return TargetStatus(phase=Phase.DONE, exit_code=0, **common)
        return TargetStatus(
            phase=Phase.FAILED, exit_code=code, message=f"exit code {code}", **common
        )
    if not alive:
        return TargetStatus(phase=Phase.LOST, message="the agent died without a word", **common)
    if phase in ("running", "stopping"):
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
