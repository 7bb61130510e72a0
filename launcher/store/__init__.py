"""The run store: SQLite under $LAUNCH_HOME.

Four tables: `runs` (one row per run, the record as JSON columns), `events` (one row per status
change, with its time), `attempts` (one row per attempt: where it ran, why it ended, what it cost)
and `resources` (billed or long-lived things, written as INTENT before they are created so
`launch gc` can always find what a dead launcher left behind).

A stop request is a column of the run (`request_stop`): whichever process asks, the launcher that
drives the run reads it on its next poll.

Status changes are compare-and-set: `transition(run_id, expected=..., new=...)` only succeeds when
the row still has the expected status and the state machine allows the move. Two launchers racing
on one run (the supervisor and a `launch cancel`) cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from launcher.errors import InvalidTransitionError, RunNotFoundError
from launcher.state import (
    ALLOWED_TRANSITIONS,
    FailureReason,
    RunHandle,
    RunPolicy,
    RunRecord,
    RunStatus,
    StatusEvent,
    StopReason,
    utcnow,
)
from launcher.store.attempts import AttemptsMixin
from launcher.store.db import SCHEMA_VERSION, default_home, iso
from launcher.store.resources import ResourcesMixin

__all__ = ["RunStore", "default_home"]


class RunStore(AttemptsMixin, ResourcesMixin):
    """A handle on the SQLite store. Cheap to create; one connection per instance."""

    # ---- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        job: str,
        target: str,
        spec_digest: str,
        spec_path: str,
        spec: dict[str, Any],
        output_dir: str,
        parent_id: str | None = None,
        policy: RunPolicy | None = None,
    ) -> RunRecord:
        now = iso(utcnow())
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, job, target, spec_digest, spec_path, spec_json, status,"
                " output_dir, parent_id, created_at, updated_at, schema_version, policy_json)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    job,
                    target,
                    spec_digest,
                    spec_path,
                    json.dumps(spec, sort_keys=True),
                    RunStatus.PENDING.value,
                    output_dir,
                    parent_id,
                    now,
                    now,
                    SCHEMA_VERSION,
                    (policy or RunPolicy()).model_dump_json(),
                ),
            )
            db.execute(
                "INSERT INTO events (run_id, seq, status, at) VALUES (?,?,?,?)",
                (run_id, 0, RunStatus.PENDING.value, now),
            )
        return self.get(run_id)

    def transition(
        self,
        run_id: str,
        *,
        expected: RunStatus | Sequence[RunStatus],
        new: RunStatus,
        message: str = "",
        failure_reason: FailureReason | None = None,
        exit_code: int | None = None,
    ) -> RunRecord:
        """Move a run from `expected` to `new`, atomically, or raise InvalidTransitionError."""
        allowed_from = (expected,) if isinstance(expected, RunStatus) else tuple(expected)
        now = iso(utcnow())
        with self._tx() as db:
            row = db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {run_id}")
            current = RunStatus(row["status"])
            if current not in allowed_from:
                raise InvalidTransitionError(
                    f"run {run_id} is {current.value}, expected"
                    f" {'/'.join(s.value for s in allowed_from)} (to go to {new.value})"
                )
            if new not in ALLOWED_TRANSITIONS[current]:
                raise InvalidTransitionError(
                    f"run {run_id}: {current.value} -> {new.value} is not allowed"
                )
            db.execute(
                "UPDATE runs SET status=?, updated_at=?, message=?,"
                " failure_reason=COALESCE(?, failure_reason), exit_code=COALESCE(?, exit_code)"
                " WHERE id=? AND status=?",
                (
                    new.value,
                    now,
                    message,
                    failure_reason.value if failure_reason else None,
                    exit_code,
                    run_id,
                    current.value,
                ),
            )
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM events WHERE run_id=?", (run_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO events (run_id, seq, status, at, message) VALUES (?,?,?,?,?)",
                (run_id, seq, new.value, now, message),
            )
        return self.get(run_id)

    def update(self, run_id: str, **fields: Any) -> None:
        """Set non-status columns (handle, prepared, supervisor, price, cost, usage, message)."""
        cols: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "handle":
                cols["handle_json"] = value.model_dump_json() if value is not None else None
            elif key in ("price_per_hour", "cost_usd"):
                cols[key] = str(value) if value is not None else None
            elif key == "usage":
                cols["usage_json"] = json.dumps(value, sort_keys=True)
            elif key in (
                "supervisor_pid",
                "supervisor_host",
                "supervisor_start",
                "message",
                "exit_code",
            ):
                cols[key] = value
            elif key == "prepared":
                cols["prepared_json"] = value.model_dump_json() if value is not None else None
            else:
                raise ValueError(f"RunStore.update: unknown field {key}")
        cols["updated_at"] = iso(utcnow())
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id=?", (*cols.values(), run_id))

    def get(self, run_id: str) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id}")
        return self._record(row)

    def resolve(self, ref: str) -> RunRecord:
        """Find a run by id or unique id prefix; `last`/`-` mean the newest run."""
        if ref in ("last", "-"):
            row = self._db.execute(
                "SELECT * FROM runs ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise RunNotFoundError("there are no runs yet", hint="start one with `launch run`")
            return self._record(row)
        rows = self._db.execute(
            "SELECT * FROM runs WHERE id LIKE ? ORDER BY created_at DESC LIMIT 3",
            (ref.replace("%", "").replace("_", r"\_") + "%",),
        ).fetchall()
        exact = [r for r in rows if r["id"] == ref]
        if exact:
            return self._record(exact[0])
        if not rows:
            raise RunNotFoundError(f"no run matches '{ref}'", hint="`launch ls` lists runs")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows)
            raise RunNotFoundError(f"'{ref}' matches several runs ({ids}); give more of the id")
        return self._record(rows[0])

    def spec_of(self, run_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT spec_json FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id}")
        return json.loads(row["spec_json"])

    def policy_of(self, run_id: str) -> RunPolicy:
        return RunPolicy.model_validate_json(self._column(run_id, "policy_json") or "{}")

    def prepared_of(self, run_id: str) -> str | None:
        """The target's `Prepared` of the run, as JSON (the target re-reads it with its model)."""
        return self._column(run_id, "prepared_json")

    def list_runs(self, *, limit: int = 50, statuses: Sequence[RunStatus] = ()) -> list[RunRecord]:
        sql = "SELECT * FROM runs"
        args: list[Any] = []
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        sql += " ORDER BY created_at DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [self._record(r) for r in rows]

    def _record(self, row: sqlite3.Row) -> RunRecord:
        events = [
            StatusEvent(status=RunStatus(e["status"]), at=e["at"], message=e["message"])
            for e in self._db.execute(
                "SELECT status, at, message FROM events WHERE run_id=? ORDER BY seq", (row["id"],)
            )
        ]
        handle = RunHandle.model_validate_json(row["handle_json"]) if row["handle_json"] else None
        return RunRecord(
            schema_version=row["schema_version"],
            id=row["id"],
            job=row["job"],
            target=row["target"],
            spec_digest=row["spec_digest"],
            spec_path=row["spec_path"],
            status=RunStatus(row["status"]),
            failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
            message=row["message"],
            handle=handle,
            output_dir=row["output_dir"],
            parent_id=row["parent_id"],
            supervisor_pid=row["supervisor_pid"],
            supervisor_host=row["supervisor_host"],
            supervisor_start=row["supervisor_start"],
            price_per_hour=Decimal(row["price_per_hour"]) if row["price_per_hour"] else None,
            cost_usd=Decimal(row["cost_usd"]) if row["cost_usd"] else None,
            usage=json.loads(row["usage_json"] or "{}"),
            exit_code=row["exit_code"],
            stop_reason=StopReason(row["stop_reason"]) if row["stop_reason"] else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            events=events,
            attempts=self.attempts(row["id"]),
        )
