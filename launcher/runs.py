"""What the orchestrator, the API and `launch gc` share about runs: who hears progress
(`Reporter`), the ledger bound to one run, run ids, and whether a run's launcher still lives."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from launcher.progress import Meter, NullMeter
from launcher.state import ResourceState, RunRecord, RunStatus
from launcher.store import RunStore
from launcher.targets.base import LogLine


class Reporter(Protocol):
    """What the orchestrator tells whoever watches (the CLI renders it; tests record it)."""

    def phase(self, status: RunStatus, previous: RunStatus, seconds: float) -> None: ...
    def log(self, line: LogLine) -> None: ...
    def note(self, message: str) -> None: ...
    def meter(self, what: str) -> Meter: ...


class SilentReporter:
    def phase(self, status: RunStatus, previous: RunStatus, seconds: float) -> None:
        return None

    def log(self, line: LogLine) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def meter(self, what: str) -> Meter:
        return NullMeter()


@dataclass
class StoreLedger:
    """The Ledger targets write resources to, bound to one attempt of one run."""

    store: RunStore
    run_id: str
    target: str
    attempt: int = 1

    def intent(self, kind: str, native_id: str, data: Mapping[str, Any] | None = None) -> int:
        return self.store.record_intent(
            self.run_id,
            target=self.target,
            kind=kind,
            native_id=native_id,
            data=dict(data or {}),
            attempt=self.attempt,
        )

    def created(self, ticket: int, native_id: str | None = None) -> None:
        self.store.mark_resource(ticket, ResourceState.CREATED, native_id=native_id)

    def release_attempt(self) -> None:
        """The target freed this attempt's resources (its cleanup returned): mark them so."""
        for res in self.store.resources(
            run_id=self.run_id, unreleased_only=True, attempt=self.attempt
        ):
            self.store.mark_resource(res.id, ResourceState.RELEASED)

    def release_one(self, resource_id: int) -> None:
        self.store.mark_resource(resource_id, ResourceState.RELEASED)


def new_run_id(job: str) -> str:
    return f"{job[:40]}-{secrets.token_hex(3)}"


def process_start(pid: int) -> str | None:
    """When `pid` started (/proc starttime, in clock ticks since boot), or None: tells a live
    process from a later one that got its number (after it died, or after a reboot)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime), counted after the ")" that closes the command name
    return stat.rsplit(")", 1)[1].split()[19]


def supervisor_alive(record: RunRecord) -> bool:
    """Is the launcher that drives this run still alive? (Only answerable on its host.)"""
    if record.supervisor_pid is None:
        return False
    if record.supervisor_host != socket.gethostname():
        return True  # another machine's launcher: we cannot tell, so we must not take over
    try:
        os.kill(record.supervisor_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{record.supervisor_pid}/stat")
    if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
        return False
    started = process_start(record.supervisor_pid)
    # another process with its number (a reboot, a long-dead launcher) is not it
    return not (record.supervisor_start and started and started != record.supervisor_start)
