"""Resources: billed or long-lived things, written as INTENT before they are created."""

from __future__ import annotations

import json
from typing import Any

from launcher.state import ResourceRecord, ResourceState, utcnow
from launcher.store.db import Db, iso


class ResourcesMixin(Db):
    # ---- resources --------------------------------------------------------------------------

    def record_intent(
        self,
        run_id: str,
        *,
        target: str,
        kind: str,
        native_id: str,
        data: dict[str, Any],
        attempt: int = 1,
    ) -> int:
        """Write down a resource BEFORE creating it. Returns the resource id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO resources (run_id, attempt, target, kind, native_id, state,"
                " data_json, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    attempt,
                    target,
                    kind,
                    native_id,
                    ResourceState.INTENT.value,
                    json.dumps(data),
                    iso(utcnow()),
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
                    iso(utcnow()),
                    resource_id,
                ),
            )

    def resources(
        self,
        *,
        run_id: str | None = None,
        unreleased_only: bool = False,
        attempt: int | None = None,
    ) -> list[ResourceRecord]:
        sql = "SELECT * FROM resources WHERE 1=1"
        args: list[Any] = []
        if run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        if attempt is not None:
            sql += " AND attempt=?"
            args.append(attempt)
        if unreleased_only:
            sql += " AND state != 'released'"
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            ResourceRecord(
                id=r["id"],
                run_id=r["run_id"],
                attempt=r["attempt"],
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
