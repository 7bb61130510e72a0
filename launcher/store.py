"""The run store: SQLite under $LAUNCH_HOME.

Three tables: `runs` (one row per run, the record as JSON columns), `events` (one row per status
change, with its time) and `resources` (billed or long-lived things, written as INTENT before they
are created so `launch gc` can always find what a dead launcher left behind).

Status changes are compare-and-set: `transition(run_id, expected=..., new=...)` only succeeds when
the row still has the expected status and the state machine allows the move. Two launchers racing
on one run (the supervisor and a `launch cancel`) cannot both win.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from launcher.errors import InvalidTransitionError, RunNotFoundError
from launcher.state import (
    ALLOWED_TRANSITIONS,
    FailureReason,
    ResourceRecord,
    ResourceState,
    RunHandle,
    RunRecord,
    RunStatus,
    StatusEvent,
    utcnow,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    spec_digest TEXT NOT NULL,
    spec_path TEXT NOT NULL DEFAULT '',
    spec_json TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    failure_reason TEXT,
    message TEXT NOT NULL DEFAULT '',
    handle_json TEXT,
    output_dir TEXT NOT NULL DEFAULT '',
    parent_id TEXT,
    supervisor_pid INTEGER,
    supervisor_host TEXT NOT NULL DEFAULT '',
    price_per_hour TEXT,
    cost_usd TEXT,
    usage_json TEXT NOT NULL DEFAULT '{}',
    exit_code INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    native_id TEXT NOT NULL,
    state TEXT NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    released_at TEXT
);
CREATE INDEX IF NOT EXISTS resources_state ON resources(state);
"""


def default_home() -> Path:
    """$LAUNCH_HOME, else the XDG data dir (~/.local/share/launch)."""
    if home := os.environ.get("LAUNCH_HOME"):
        return Path(home).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "launch"


def _ts(dt: datetime) -> str:
    return dt.isoformat()


class RunStore:
    """A handle on the SQLite store. Cheap to create; one connection per instance."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "runs.db"
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE) so a CAS read
        # and its write cannot interleave with another process.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Stores made by an older version gain the columns added since (never dropped)."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "usage_json" not in have:
            try:
                self._db.execute(
                    "ALTER TABLE runs ADD COLUMN usage_json TEXT NOT NULL DEFAULT '{}'"
                )
            except sqlite3.OperationalError as e:  # another process added it first
                if "duplicate column" not in str(e):
                    raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Generator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
    ) -> RunRecord:
        now = _ts(utcnow())
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, job, target, spec_digest, spec_path, spec_json, status,"
                " output_dir, parent_id, created_at, updated_at, schema_version)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
        now = _ts(utcnow())
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
        """Set non-status columns (handle, supervisor, price, cost, message)."""
        cols: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "handle":
                cols["handle_json"] = value.model_dump_json() if value is not None else None
            elif key in ("price_per_hour", "cost_usd"):
                cols[key] = str(value) if value is not None else None
            elif key == "usage":
                cols["usage_json"] = json.dumps(value, sort_keys=True)
            elif key in ("supervisor_pid", "supervisor_host", "message", "exit_code"):
                cols[key] = value
            else:
                raise ValueError(f"RunStore.update: unknown field {key}")
        cols["updated_at"] = _ts(utcnow())
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
            price_per_hour=Decimal(row["price_per_hour"]) if row["price_per_hour"] else None,
            cost_usd=Decimal(row["cost_usd"]) if row["cost_usd"] else None,
            usage=json.loads(row["usage_json"] or "{}"),
            exit_code=row["exit_code"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            events=events,
        )

    # ---- resources --------------------------------------------------------------------------

    def record_intent(
        self, run_id: str, *, target: str, kind: str, native_id: str, data: dict[str, Any]
    ) -> int:
        """Write down a resource BEFORE creating it. Returns the resource id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO resources (run_id, target, kind, native_id, state, data_json,"
                " created_at) VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    target,
                    kind,
                    native_id,
                    ResourceState.INTENT.value,
                    json.dumps(data),
                    _ts(utcnow()),
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def mark_resource(
        self,
        resource_id: int,
        state: ResourceState,
        *,
        native_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE resources SET state=?, native_id=COALESCE(?, native_id),"
                " data_json=COALESCE(?, data_json),"
                " released_at=CASE WHEN ?='released' THEN ? ELSE released_at END WHERE id=?",
                (
                    state.value,
                    native_id,
                    json.dumps(data) if data is not None else None,
                    state.value,
                    _ts(utcnow()),
                    resource_id,
                ),
            )

    def resources(
        self, *, run_id: str | None = None, unreleased_only: bool = False
    ) -> list[ResourceRecord]:
        sql = "SELECT * FROM resources WHERE 1=1"
        args: list[Any] = []
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        if unreleased_only:
            sql += " AND state != 'released'"
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            ResourceRecord(
                id=r["id"],
                run_id=r["run_id"],
                target=r["target"],
                kind=r["kind"],
                native_id=r["native_id"],
                state=ResourceState(r["state"]),
                data=json.loads(r["data_json"]),
                created_at=r["created_at"],
                released_at=r["released_at"],
            )
            for r in rows
        ]
