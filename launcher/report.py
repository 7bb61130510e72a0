"""Compare targets on what runs really took: pure functions over run records.

A row per (job, target): how many runs, how many succeeded, how many attempts they took (a
platform that pre-empts or caps sessions needs more), the median seconds of each stage and in
total, with the median and summed cost and the mean cost of one attempt. Stages group the run
statuses the way a user thinks of them: setup on this machine, getting a machine, the job
itself, bringing results home.
Medians, because one slow image pull should not make a platform look slow forever.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from decimal import Decimal

from pydantic import BaseModel

from launcher.state import RunRecord, RunStatus

STAGES: Mapping[str, frozenset[RunStatus]] = {
    "prepare": frozenset({RunStatus.PENDING, RunStatus.PREPARING}),
    "start": frozenset({RunStatus.PROVISIONING, RunStatus.UPLOADING, RunStatus.STARTING}),
    "run": frozenset({RunStatus.RUNNING, RunStatus.PREEMPTED}),
    "pull": frozenset({RunStatus.PULLING}),
}


class ReportRow(BaseModel):
    job: str
    target: str
    runs: int
    succeeded: int
    attempts: int  # over all the runs: more than `runs` when platforms ended some early
    cost_per_attempt_usd: Decimal | None
    median_s: dict[str, float]  # stage -> median seconds over finished runs; plus "total"
    median_cost_usd: Decimal | None
    total_cost_usd: Decimal | None


def stage_seconds(record: RunRecord) -> dict[str, float]:
    """Seconds per stage of one finished run, plus "total"."""
    out = dict.fromkeys(STAGES, 0.0)
    for status, secs in record.phase_durations():
        for stage, members in STAGES.items():
            if status in members:
                out[stage] += secs
    out["total"] = sum(out.values())
    return out


def build(records: Iterable[RunRecord]) -> list[ReportRow]:
    """One row per (job, target) over finished runs, sorted by job then median total time."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        if r.status.is_terminal():
            groups.setdefault((r.job, r.target), []).append(r)
    rows: list[ReportRow] = []
    for (job, target), runs in groups.items():
        timed = [stage_seconds(r) for r in runs]
        costs = [r.cost_usd for r in runs if r.cost_usd is not None]
        tries = [a for r in runs for a in r.attempts]
        priced = [c for a in tries if (c := a.cost()) is not None]
        rows.append(
            ReportRow(
                job=job,
                target=target,
                runs=len(runs),
                succeeded=sum(r.status is RunStatus.SUCCEEDED for r in runs),
                attempts=len(tries),
                cost_per_attempt_usd=(
                    (sum(priced, Decimal(0)) / len(priced)).quantize(Decimal("0.000001"))
                    if priced
                    else None
                ),
                median_s={k: statistics.median(t[k] for t in timed) for k in timed[0]},
                median_cost_usd=statistics.median(costs) if costs else None,
                total_cost_usd=sum(costs, Decimal(0)) if costs else None,
            )
        )
    return sorted(rows, key=lambda row: (row.job, row.median_s["total"]))
