"""Stop requests and attempts: what any process asks of a run, and each try at running it."""

from __future__ import annotations

import json
from decimal import Decimal

from launcher.state import AttemptEnd, AttemptRecord, StopReason, utcnow
from launcher.store.db import Db, iso


class AttemptsMixin(Db):
    # ---- stop requests ----------------------------------------------------------------------

    def request_stop(self, run_id: str, reason: StopReason) -> StopReason:
        """Ask the run to stop. The first reason given stays (a cancel after a cost-limit stop
        does not make it a cancel); returns the reason in force."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET stop_reason=?, stop_requested_at=? WHERE id=?"
                " AND stop_reason IS NULL",
                (reason.value, iso(utcnow()), run_id),
            )
        found = self.stop_request(run_id)
        assert found is not None
        return found

    def stop_request(self, run_id: str) -> StopReason | None:
        value = self._column(run_id, "stop_reason")
        return StopReason(value) if value else None

    # ---- attempts ---------------------------------------------------------------------------

    def begin_attempt(self, run_id: str, number: int, target: str) -> None:
        """An attempt starts now (before its machine is asked for: billing may start there)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO attempts (run_id, number, target, started_at) VALUES (?,?,?,?)",
                (run_id, number, target, iso(utcnow())),
            )

    def update_attempt(
        self,
        run_id: str,
        number: int,
        *,
        where: str | None = None,
        price_per_hour: Decimal | None = None,
        ran_s: float | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET place=COALESCE(?, place),"
                " price_per_hour=COALESCE(?, price_per_hour), ran_s=COALESCE(?, ran_s)"
                " WHERE run_id=? AND number=?",
                (
                    where,
                    str(price_per_hour) if price_per_hour is not None else None,
                    ran_s,
                    run_id,
                    number,
                ),
            )

    def end_attempt(
        self,
        run_id: str,
        number: int,
        end: AttemptEnd,
        *,
        message: str = "",
        usage: dict[str, float] | None = None,
    ) -> None:
        """The attempt's machine is released: its bill stops now. Ending one twice keeps the
        first end."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET ended_at=?, end_reason=?, message=?, usage_json=?"
                " WHERE run_id=? AND number=? AND ended_at IS NULL",
                (iso(utcnow()), end.value, message, json.dumps(usage or {}), run_id, number),
            )

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = self._db.execute(
            "SELECT * FROM attempts WHERE run_id=? ORDER BY number", (run_id,)
        ).fetchall()
        return [
            AttemptRecord(
                number=r["number"],
                target=r["target"],
                where=r["place"],
                started_at=r["started_at"],
                ended_at=r["ended_at"],
                end=AttemptEnd(r["end_reason"]) if r["end_reason"] else None,
                message=r["message"],
                ran_s=r["ran_s"],
                price_per_hour=Decimal(r["price_per_hour"]) if r["price_per_hour"] else None,
                usage=json.loads(r["usage_json"] or "{}"),
            )
            for r in rows
        ]
