from __future__ import annotations

import json
import multiprocessing
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from launcher.errors import InvalidTransitionError, RunNotFoundError
from launcher.state import (
    ALLOWED_TRANSITIONS,
    FailureReason,
    ResourceState,
    RunHandle,
    RunStatus,
)
from launcher.store import RunStore

S = RunStatus


def _new(store: RunStore, run_id: str = "hello-abc123") -> str:
    store.create_run(
        run_id=run_id,
        job="hello",
        target="local",
        spec_digest="d" * 64,
        spec_path="jobs/hello.yaml",
        spec={"name": "hello"},
        output_dir="/tmp/out",
    )
    return run_id


def test_lifecycle_records_every_transition_with_time(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    for old, new in [
        (S.PENDING, S.PREPARING),
        (S.PREPARING, S.STARTING),
        (S.STARTING, S.RUNNING),
        (S.RUNNING, S.PULLING),
        (S.PULLING, S.SUCCEEDED),
    ]:
        store.transition(rid, expected=old, new=new)
    rec = store.get(rid)
    assert rec.status is S.SUCCEEDED
    assert [e.status for e in rec.events] == [
        S.PENDING,
        S.PREPARING,
        S.STARTING,
        S.RUNNING,
        S.PULLING,
        S.SUCCEEDED,
    ]
    times = [e.at for e in rec.events]
    assert times == sorted(times)
    phases = rec.phase_durations()
    assert [p for p, _ in phases] == [S.PENDING, S.PREPARING, S.STARTING, S.RUNNING, S.PULLING]
    assert all(sec >= 0 for _, sec in phases)


def test_compare_and_set_refuses_a_stale_expectation(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    store.transition(rid, expected=S.PENDING, new=S.PREPARING)
    with pytest.raises(InvalidTransitionError, match="is preparing, expected pending"):
        store.transition(rid, expected=S.PENDING, new=S.PREPARING)
    assert len(store.get(rid).events) == 2


def test_forbidden_transition_is_refused(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    with pytest.raises(InvalidTransitionError, match="not allowed"):
        store.transition(rid, expected=S.PENDING, new=S.SUCCEEDED)
    store.transition(
        rid, expected=S.PENDING, new=S.FAILED, failure_reason=FailureReason.PREPARE_FAILED
    )
    with pytest.raises(InvalidTransitionError):
        store.transition(rid, expected=S.FAILED, new=S.RUNNING)
    assert store.get(rid).failure_reason is FailureReason.PREPARE_FAILED


def test_terminal_states_have_no_way_out_and_every_state_can_fail() -> None:
    for status, nxt in ALLOWED_TRANSITIONS.items():
        if status.is_terminal():
            assert nxt == frozenset()
        else:
            assert S.FAILED in nxt and S.CANCELLED in nxt


def _race(home: str, rid: str, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = RunStore(Path(home))
    try:
        store.transition(rid, expected=S.RUNNING, new=S.CANCELLED)
        q.put("won")
    except InvalidTransitionError:
        q.put("lost")


def test_two_processes_racing_on_one_run_exactly_one_wins(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    store.transition(rid, expected=S.PENDING, new=S.PREPARING)
    store.transition(rid, expected=S.PREPARING, new=S.RUNNING)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(launch_home), rid, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results == ["lost", "lost", "lost", "won"]


def test_handle_round_trips_as_json_not_pickle(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    handle = RunHandle(target="local", run_id=rid, data={"container": "launch-x", "n": 3})
    store.update(rid, handle=handle, supervisor_pid=123, supervisor_host="h")
    assert store.get(rid).handle == handle
    raw = (
        sqlite3.connect(launch_home / "runs.db").execute("SELECT handle_json FROM runs").fetchone()
    )
    assert '"container": "launch-x"' in raw[0] or '"container":"launch-x"' in raw[0]


def test_resolve_by_prefix_last_and_ambiguity(launch_home: Path) -> None:
    store = RunStore(launch_home)
    _new(store, "hello-aaa111")
    _new(store, "hello-aab222")
    _new(store, "other-ccc333")
    assert store.resolve("other").id == "other-ccc333"
    assert store.resolve("hello-aaa").id == "hello-aaa111"
    assert store.resolve("last").id == "other-ccc333"
    with pytest.raises(RunNotFoundError, match="several runs"):
        store.resolve("hello-aa")
    with pytest.raises(RunNotFoundError, match="no run matches"):
        store.resolve("nope")
    with pytest.raises(RunNotFoundError):
        store.resolve("hello_")  # '_' is not a LIKE wildcard here


def test_resources_are_recorded_before_creation_and_released(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    ticket = store.record_intent(
        rid, target="local", kind="container", native_id="launch-x", data={}
    )
    [res] = store.resources(unreleased_only=True)
    assert res.state is ResourceState.INTENT and res.native_id == "launch-x"
    store.mark_resource(ticket, ResourceState.CREATED, native_id="launch-x")
    store.mark_resource(ticket, ResourceState.RELEASED)
    assert store.resources(unreleased_only=True) == []
    [res] = store.resources(run_id=rid)
    assert res.released_at is not None and res.released_at - res.created_at < timedelta(minutes=1)


def test_store_reads_rows_written_by_a_newer_launcher(launch_home: Path) -> None:
    store = RunStore(launch_home)
    rid = _new(store)
    store.update(rid, handle=RunHandle(target="local", run_id=rid))
    db = sqlite3.connect(launch_home / "runs.db")
    db.execute(
        "UPDATE runs SET handle_json=? WHERE id=?",
        (json.dumps({"target": "local", "run_id": rid, "data": {}, "added_later": 1}), rid),
    )
    db.commit()
    assert store.get(rid).handle is not None


def test_a_store_made_before_usage_existed_gains_the_column_and_keeps_its_runs(
    launch_home: Path,
) -> None:
    store = RunStore(launch_home)
    _new(store)
    store.close()
    # roll the file back to the schema of the previous version: no usage_json column
    db = sqlite3.connect(launch_home / "runs.db")
    db.execute("ALTER TABLE runs DROP COLUMN usage_json")
    db.commit()
    db.close()
    again = RunStore(launch_home)
    assert again.get("hello-abc123").usage == {}
    again.update("hello-abc123", usage={"kaggle_quota_hours": 1.25})
    assert again.get("hello-abc123").usage == {"kaggle_quota_hours": 1.25}


def test_a_reused_pid_is_not_the_runs_launcher(launch_home: Path) -> None:
    """After a reboot (or long after the launcher died) its pid may belong to anything: gc
    must not skip the run forever, nor take a live launcher's run away."""
    import os
    import socket

    from launcher.runs import process_start, supervisor_alive
    from launcher.state import RunRecord

    me = os.getpid()
    base = {"id": "r", "job": "j", "target": "local", "spec_digest": "d", "status": "running",
            "output_dir": "/tmp/r", "supervisor_pid": me, "supervisor_host": socket.gethostname(),
            "created_at": "2026-12-08T00:00:00Z", "updated_at": "2026-12-08T00:00:00Z"}  # fmt: skip
    started = process_start(me)
    assert started is not None
    assert supervisor_alive(RunRecord.model_validate({**base, "supervisor_start": started}))
    assert not supervisor_alive(RunRecord.model_validate({**base, "supervisor_start": "1"}))
    assert supervisor_alive(RunRecord.model_validate(base))  # stored before start times were
