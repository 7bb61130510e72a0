"""The store's schema, its migrations, and the connection the other parts share."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher import settings
from launcher.errors import LaunchError, RunNotFoundError

LOCK_WAIT_S = 30.0  # how long a write waits for another process's write to finish


class StoreBusyError(LaunchError):
    """Another process held the store's write lock for longer than LOCK_WAIT_S."""


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
    schema_version INTEGER NOT NULL,
    stop_reason TEXT,
    stop_requested_at TEXT,
    policy_json TEXT NOT NULL DEFAULT '{}',
    prepared_json TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    number INTEGER NOT NULL,
    target TEXT NOT NULL,
    place TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT,
    message TEXT NOT NULL DEFAULT '',
    ran_s REAL NOT NULL DEFAULT 0,
    price_per_hour TEXT,
    usage_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, number)
);
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    attempt INTEGER NOT NULL DEFAULT 1,
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


# columns added after a store's first version: (table, [(name, declaration)])
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "runs": [
        ("usage_json", "TEXT NOT NULL DEFAULT '{}'"),
        ("stop_reason", "TEXT"),
        ("stop_requested_at", "TEXT"),
        ("policy_json", "TEXT NOT NULL DEFAULT '{}'"),
        ("prepared_json", "TEXT"),
        # when the supervisor process started (/proc starttime): a reused pid is not it
        ("supervisor_start", "TEXT NOT NULL DEFAULT ''"),
    ],
    "resources": [("attempt", "INTEGER NOT NULL DEFAULT 1")],
}


def default_home() -> Path:
    """$LAUNCH_HOME, else the XDG data dir (~/.local/share/launch)."""
    if home := settings.folder("LAUNCH_HOME"):
        return home
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "launch"


def iso(dt: datetime) -> str:
    return dt.isoformat()


class Db:
    """One SQLite connection to the store, its schema made or migrated on open."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "runs.db"
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE) so a CAS read
        # and its write cannot interleave with another process.
        self._db = sqlite3.connect(self.path, timeout=LOCK_WAIT_S, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys=ON")
        # Opening an existing store writes nothing: a launcher that holds the write lock (one
        # suspended with Ctrl-Z mid-write) must not stop `launch ls` or `launch cancel` here.
        tables = {r["name"] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if not {"runs", "events", "attempts", "resources"} <= tables:
            with self._locked("create the store"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Stores made by an older version gain the columns added since (never dropped)."""
        for table, columns in _ADDED_COLUMNS.items():
            have = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name in have:
                    continue
                try:
                    with self._locked("add a column to the store"):
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _locked(self, what: str) -> Generator[None]:
        """Turn SQLite's "database is locked" (after LOCK_WAIT_S) into a message a user can
        act on."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            raise StoreBusyError(
                f"could not {what}: the run store {self.path} stayed locked for "
                f"{LOCK_WAIT_S:g}s by another launch process",
                hint="a launch suspended with Ctrl-Z holds it: resume it with `fg`, or end it",
            ) from e

    @contextmanager
    def _tx(self) -> Generator[sqlite3.Connection]:
        with self._locked("write to the store"):
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _column(self, run_id: str, name: str) -> Any:
        row = self._db.execute(f"SELECT {name} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id}")
        return row[name]
