"""`launch plan JOB --target kaggle`: the machine shape, the session cap, the weekly quota left
(GetAcceleratorQuotaStatistics) and how many chained sessions the job's time limit needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.targets.base import Plan, PlanOption
from launcher.targets.kaggle.client import KaggleClient
from launcher.targets.kaggle.lowering import SHAPES, gpu_problems
from launcher.targets.kaggle.options import KaggleOptions

if TYPE_CHECKING:
    from launcher.spec import JobSpec


def quota_left(client: KaggleClient, accelerator: str) -> tuple[float, float | None]:
    """Seconds of the weekly quota the shape draws on: (used, left); left None if unknown."""
    key = "tpu" if accelerator.lower().startswith("tpu") else "gpu"
    used, allowed = client.quota().get(key, (0.0, 0.0))
    return used, (allowed - used if allowed else None)


def make_plan(
    spec: JobSpec, client: KaggleClient, home: Path, notify: Callable[[str], None]
) -> Plan:
    opts: KaggleOptions = spec.targets.for_target("kaggle")
    gpu = spec.resources.gpu.count > 0
    session_s = opts.session_hours * 3600
    grace = float(spec.limits.grace_seconds)
    usable = max(1.0, session_s - min(60.0, max(1.0, 0.1 * session_s)) - min(60.0, 2 * grace))
    hours = spec.limits.max_hours
    notes: list[str] = [f"session cap {opts.session_hours:g} h (the job checkpoints before it)"]
    problems: list[str] = []
    urls = [str(i.name) for i in spec.inputs if i.url is not None or i.hf is not None]
    if urls and not opts.internet:
        problems.append(
            f"input(s) {', '.join(urls)} are downloaded by the kernel, which has no internet: "
            "set targets.kaggle.internet: true"
        )
    sessions = math.ceil(hours * 3600 / usable) if hours else None
    if sessions is not None:
        notes.append(
            f"max_hours {hours:g} h needs {sessions} session(s)"
            + (", chained from the newest checkpoint" if sessions > 1 else "")
        )
        if sessions > 1 and not opts.allow_chaining:
            problems.append(
                f"the job may run {hours:g} h but a Kaggle session ends after "
                f"{opts.session_hours:g} h: set targets.kaggle.allow_chaining: true, or lower "
                "limits.max_hours"
            )
        if sessions > opts.max_sessions:
            problems.append(
                f"{sessions} sessions are needed but targets.kaggle.max_sessions is "
                f"{opts.max_sessions}"
            )
    else:
        notes.append("no limits.max_hours: the run chains sessions until the job ends")
    if gpu:
        name, count, mem, _cc = SHAPES[opts.accelerator]
        option = PlanOption(
            name=opts.accelerator, gpu=name, gpu_count=count, gpu_ram_gb=mem, price_per_hour=0
        )
        used, left = quota_left(client, opts.accelerator)
        if left is not None:
            notes.append(f"weekly quota: {left / 3600:.2f} h left ({used / 3600:.2f} h used)")
            if left <= 0:
                problems.append("the weekly Kaggle quota for this accelerator is used up")
            elif hours and hours * 3600 > left:
                problems.append(
                    f"the job may run {hours:g} h but only {left / 3600:.2f} h of weekly quota "
                    "is left: lower limits.max_hours or wait for the quota to refresh"
                )
        notes.extend(
            f"warning: Kaggle cannot give this: {p}" for p in gpu_problems(spec, opts.accelerator)
        )
    else:
        option = PlanOption(name="CPU", price_per_hour=0)
        notes.append("a CPU session: no GPU quota is used")
    option.estimated_cost_usd = 0.0
    from launcher.lowering import lower_job

    lowered = lower_job(spec, "kaggle", opts.requirements, home, notify)
    notes.extend(lowered.notes)
    notes.extend(f"warning: {w}" for w in lowered.warnings)
    problems.extend(f"{what}; fix: {fix}" for what, fix in lowered.problems)
    return Plan(target="kaggle", options=[option], notes=notes, problems=problems)
