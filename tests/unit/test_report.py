from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from launcher.report import build, stage_seconds
from launcher.state import RunRecord, RunStatus, StatusEvent

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
S = RunStatus


def _run(
    rid: str, target: str, steps: list[tuple[RunStatus, float]], cost: str | None
) -> RunRecord:
    events, t = [], T0
    for status, secs in steps:
        events.append(StatusEvent(status=status, at=t))
        t += timedelta(seconds=secs)
    return RunRecord(
        id=rid,
        job="hello",
        target=target,
        spec_digest="d",
        status=steps[-1][0],
        created_at=T0,
        updated_at=t,
        events=events,
        cost_usd=Decimal(cost) if cost is not None else None,
    )


OK = [
    (S.PENDING, 1),
    (S.PREPARING, 2),
    (S.PROVISIONING, 30),
    (S.UPLOADING, 5),
    (S.STARTING, 5),
    (S.RUNNING, 100),
    (S.PULLING, 3),
    (S.SUCCEEDED, 0),
]


def test_stage_seconds_groups_statuses_the_way_users_think() -> None:
    st = stage_seconds(_run("a", "vast", OK, "0.1"))
    assert st == {"prepare": 3, "start": 40, "run": 100, "pull": 3, "total": 146}


def test_rows_per_job_and_target_with_medians_and_costs() -> None:
    slow = [(s, secs * 2) for s, secs in OK]
    failed = [(S.PENDING, 1), (S.PREPARING, 1), (S.FAILED, 0)]
    running = [(S.PENDING, 1), (S.RUNNING, 1)]  # not finished: left out
    rows = build(
        [
            _run("a", "vast", OK, "0.10"),
            _run("b", "vast", slow, "0.30"),
            _run("c", "vast", OK, "0.20"),
            _run("d", "local", OK, "0"),
            _run("e", "local", failed, "0"),
            _run("f", "local", running, None),
        ]
    )
    assert [(r.target, r.runs, r.succeeded) for r in rows] == [("local", 2, 1), ("vast", 3, 3)]
    vast = rows[1]
    assert vast.median_s["total"] == 146 and vast.median_s["start"] == 40
    assert vast.median_cost_usd == Decimal("0.20") and vast.total_cost_usd == Decimal("0.60")


def test_no_finished_runs_no_rows() -> None:
    assert build([]) == []
