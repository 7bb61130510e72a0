"""`launch gc`: find runs whose launcher died and resources nobody owns, then free them.

Two sources, because either can be the only trace: the store (runs not terminal whose supervisor
is gone; ledger entries never released) and the platforms (resources carrying our run label that
no live run claims).

A platform account may be shared by several stores (two laptops, a laptop and a CI job): a run id
this store does not know is no sign that nobody owns the resource. Only a label with this store's
key (launcher/store/identity.py) makes a resource ours; other stores' resources, and those an
older launch labelled without a key, are listed and left alone unless `all_owners` is given.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher.errors import LaunchError
from launcher.orchestrator import StoreLedger, supervisor_alive
from launcher.state import FailureReason, ResourceState, RunRecord, StopReason
from launcher.targets.base import Foreign

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


@dataclass
class GcPlan:
    actions: list[GcAction] = field(default_factory=list[GcAction])
    skipped: list[str] = field(default_factory=list[str])  # one line each: what is left, and why


def plan_gc(
    session: Session,
    targets: Sequence[str] = ("local",),
    *,
    all_owners: bool = False,
    discard_kept: bool = False,
) -> GcPlan:
    """What `launch gc` would do: runs whose launcher died, and resources nobody owns; and what
    it leaves alone, with why."""
    store = session.store
    plan = GcPlan()
    actions = plan.actions
    records = store.list_runs(limit=10_000)
    kept: set[str] = set()  # machines holding outputs that did not come home
    holding: set[str] = set()  # the runs they belong to: none of their labels is a stray
    for record in records:
        if record.status.is_terminal():
            unreleased = store.resources(run_id=record.id, unreleased_only=True)
            holds = not discard_kept and any(r.state is ResourceState.KEPT for r in unreleased)
            if holds:
                holding.add(record.id)
            for res in unreleased:
                if holds and res.state is not ResourceState.KEPT:
                    kept.add(res.native_id)  # freed by label, it could take the kept one along
                    continue
                if res.state is ResourceState.KEPT and not discard_kept:
                    kept.add(res.native_id)
                    plan.skipped.append(
                        f"keeping {res.kind} {res.native_id} of {record.id}: its outputs did "
                        f"not all come home; `launch pull {record.id}` fetches them first "
                        "(`launch gc --discard-kept` frees it without them)"
                    )
                    continue
                lost = " (what did not come home goes with it)" * (res.state is ResourceState.KEPT)
                actions.append(
                    GcAction(
                        "release",
                        record.id,
                        res.target,
                        f"free {res.kind} {res.native_id} of finished run{lost}",
                        res.native_id,
                        res.kind,
                        res.data,
                    )
                )
            continue
        if supervisor_alive(record):
            plan.skipped.append(f"leaving {record.id} ({record.status.value}): {_alive(record)}")
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
    known = {r.id: r for r in records}
    claimed = {a.native_id for a in actions} | kept
    for name in targets:
        target = session.target(name)
        found = target.labelled()
        for f in target.not_ours():
            where = f"{name} {target.stray_kind} {f.native_id}" + (
                f", {f.state}" if f.state != target.stray_kind else ""
            )
            if not f.owner and f.run_id in known:
                # an older launch's label (no store key) on a run this store made: ours
                found.append((f.native_id, f.run_id, f.state))
            elif all_owners:
                actions.append(
                    GcAction(
                        "remove-stray",
                        f.run_id,
                        name,
                        f"remove {f.label} ({where}): not ours, {_whose(f)}",
                        f.native_id,
                        target.stray_kind,
                    )
                )
            else:
                plan.skipped.append(
                    f"not ours: {f.label} ({where}): {_whose(f)}; "
                    "`launch gc --all-owners` frees it"
                )
        for native_id, run_id, state in found:
            rec = known.get(run_id)
            if native_id in claimed or run_id in holding:
                continue
            if rec is not None and not rec.status.is_terminal():
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
    return plan


def _alive(record: RunRecord) -> str:
    if record.supervisor_host != socket.gethostname():
        return (
            f"its launcher runs on {record.supervisor_host} (pid {record.supervisor_pid}); "
            "gc here cannot tell whether it is alive"
        )
    return f"its launcher (pid {record.supervisor_pid}) is alive"


def _whose(f: Foreign) -> str:
    if f.owner:
        return f"another store's (key {f.owner})"
    return "labelled by an older launch that named no store, for a run this store does not know"


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
