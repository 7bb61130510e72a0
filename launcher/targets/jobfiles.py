"""What every target ships with a job: the bundle, and the agent's configuration.

Kept in one place so all targets hand the agent the same contract (DESIGN.md, "The agent").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher import agent as agent_mod
from launcher.bundle import Bundle, build_bundle


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
