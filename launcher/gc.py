"""`launch gc`: find runs whose launcher died and resources nobody owns, then free them.

Two sources, because either can be the only trace: the store (runs not terminal whose supervisor
is gone; ledger entries never released) and the platforms (resources carrying our run label that
no live run claims).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.errors import LaunchError
from launcher.orchestrator import StoreLedger, supervisor_alive
from launcher.state import FailureReason, StopReason

if TYPE_CHECKING:
    from launcher.api import Session


@dataclass
class GcAction:
    kind: str  # "stop-orphan" | "abandon" | "remove-stray" | "release"
    run_id: str
    target: str
    what: str
    native_id: str = ""
    resource_kind: str = ""
    data: dict[str, Any] = field(default_factory=dict[str, Any])  # the ledger entry's


def plan_gc(session: Session, targets: Sequence[str] = ("local",)) -> list[GcAction]:
    """What `launch gc` would do: runs whose launcher died, and resources nobody owns."""
    store = session.store
    actions: list[GcAction] = []
    for record in store.list_runs(limit=10_000):
        if record.status.is_terminal():
            for res in store.resources(run_id=record.id, unreleased_only=True):
                actions.append(
                    GcAction(
                        "release",
                        record.id,
                        res.target,
                        f"free {res.kind} {res.native_id} of finished run",
                        res.native_id,
                        res.kind,
                        res.data,
                    )
                )
            continue
        if supervisor_alive(record):
            continue
        if record.handle is not None:
            actions.append(
                GcAction(
                    "stop-orphan",
                    record.id,
                    record.target,
                    f"stop run {record.id} (its launcher died) and pull its outputs",
                )
            )
        else:
            actions.append(
                GcAction(
                    "abandon",
                    record.id,
                    record.target,
                    f"mark run {record.id} failed (its launcher died before it started)",
                )
            )
    known = {r.id: r for r in store.list_runs(limit=10_000)}
    claimed = {a.native_id for a in actions}
    for name in targets:
        target = session.target(name)
        for native_id, run_id, state in target.labelled():
            rec = known.get(run_id)
            if native_id in claimed or (rec is not None and not rec.status.is_terminal()):
                continue
            if rec is not None and any(a.run_id == run_id for a in actions):
                continue
            actions.append(
                GcAction(
                    "remove-stray",
                    run_id,
                    name,
                    f"remove {native_id} ({state}), labelled for run {run_id or '?'}",
                    native_id,
                    target.stray_kind,
                )
            )
    return actions


def apply_gc(session: Session, actions: Sequence[GcAction]) -> list[str]:
    """Carry out a gc plan. Returns one line per action done."""
    done: list[str] = []
    for action in actions:
        try:
            done.append(_apply_one(session, action))
        except LaunchError as e:  # one stuck run must not keep gc from freeing the others
            done.append(f"could not {action.what}: {e.message}")
    return done


def _apply_one(session: Session, action: GcAction) -> str:
    orch = session.orchestrator(action.target)
    if action.kind == "stop-orphan":
        orch.adopt(action.run_id)
        rec = orch.stop_and_finish(action.run_id, StopReason.LAUNCHER_LOST)
        return f"stopped {rec.id}: {rec.status.value}; `launch pull {rec.id}` fetches its outputs"
    if action.kind == "abandon":
        orch.abandon(action.run_id, FailureReason.LAUNCHER_LOST)
        return f"marked {action.run_id} failed and freed what it had recorded"
    orch.target.release_resource(action.resource_kind, action.native_id, action.data)
    if action.kind == "release":
        for res in session.store.resources(run_id=action.run_id, unreleased_only=True):
            if res.native_id == action.native_id:
                StoreLedger(session.store, action.run_id, action.target).release_one(res.id)
    return f"removed {action.native_id}"
