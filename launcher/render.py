"""How runs look in a terminal. Imported only by CLI commands that print (rich is not cheap)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launcher.progress import Meter, NullMeter, PlainMeter, summary
from launcher.state import AttemptEnd, RunRecord, RunStatus, utcnow
from launcher.targets.base import LogLine, TargetStatus

_STYLE = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.PREEMPTED: "yellow",
}


def _styled(status: RunStatus, bold: bool = False) -> str:
    """The status as markup: coloured when it has a colour (only ended runs do), plain
    otherwise; never an empty `[]` tag, which rich refuses."""
    style = " ".join(s for s in (_STYLE.get(status, ""), "bold" if bold else "") if s)
    return f"[{style}]{status.value}[/]" if style else status.value


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class ConsoleReporter:
    """Phases as one line each with their duration, a spinner for the current phase on a TTY,
    and the job's log lines streamed in between. Progress goes to stderr, so stdout stays for
    the job's own output and `--json`."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.err = _console(stderr=True)
        self.out = _console()
        self._status: Any = None

    def _spin(self, text: str) -> None:
        if self.quiet or not self.err.is_terminal:
            return
        if self._status is None:
            self._status = self.err.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def phase(self, status: RunStatus, previous: RunStatus, seconds: float) -> None:
        if self.quiet:
            return
        if previous is not RunStatus.PENDING:
            # a phase the run failed or was stopped in did not succeed: no green tick for it
            mark = {RunStatus.FAILED: "[red]✗[/]", RunStatus.CANCELLED: "[yellow]■[/]"}.get(
                status, "[green]✓[/]"
            )
            self.err.print(f"{mark} {previous.value:<12} [dim]{seconds:6.1f}s[/]")
        if status.is_terminal():
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        self._spin(f"{status.value}…")

    def log(self, line: LogLine) -> None:
        if self.quiet:
            return
        if line.stream == "agent":
            self.err.print(f"[dim]agent: {escape(line.text)}[/]")
        elif line.stream == "err":
            self.err.print(escape(line.text), style="")
        elif self._status is not None and self.out.is_terminal:
            # the spinner draws on the same terminal through stderr's console: clear it before
            # the job's line, or the line lands after it ("⠸ running…epoch 12/40")
            self._status.stop()
            self.out.print(escape(line.text))
            self._status.start()
        else:
            self.out.print(escape(line.text))

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[cyan]›[/] {escape(message)}")

    def pause_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()

    def resume_spinner(self) -> None:
        if self._status is not None:
            self._status.start()

    def meter(self, what: str) -> Meter:
        if self.quiet:
            return NullMeter()
        if not self.err.is_terminal:
            return PlainMeter(what, self.note)
        return _RichMeter(self, what)


class _RichMeter:
    """A rich bar with bytes, rate and ETA on stderr, drawn once a transfer has run for
    `SHOW_AFTER_S` (short sync ticks never flash one). The phase spinner pauses meanwhile: rich
    allows one live display per console."""

    SHOW_AFTER_S = 1.0

    def __init__(self, reporter: ConsoleReporter, what: str) -> None:
        self.reporter, self.what = reporter, what
        self.total = self.files = self.done = 0
        self.t0 = 0.0
        self.bar: Any = None
        self.task: Any = None

    def start(self, total_bytes: int, files: int) -> None:
        self.total, self.files, self.done = total_bytes, files, 0
        self.t0 = time.monotonic()

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.bar is None:
            if time.monotonic() - self.t0 < self.SHOW_AFTER_S:
                return
            self._show()
        bar: Any = self.bar
        bar.update(self.task, completed=self.done)

    def _show(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.reporter.pause_spinner()
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.reporter.err,
            transient=True,
        )
        label = f"{self.what} ({self.files} file{'s' if self.files != 1 else ''})"
        self.task = self.bar.add_task(label, total=self.total or None, completed=self.done)
        self.bar.start()

    def finish(self) -> None:
        if self.bar is None:
            return
        self.bar.stop()
        self.bar = None
        self.reporter.note(summary(self.what, self.done, time.monotonic() - self.t0))
        self.reporter.resume_spinner()


def _ago(at: datetime) -> str:
    secs = (utcnow() - at).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def _total(record: RunRecord) -> float:
    return sum(s for _, s in record.phase_durations())


def final_summary(record: RunRecord, checkpoint: str | None) -> None:
    """The run's last lines; `checkpoint` is the newest one pulled (what a resume starts from),
    None when none came home."""
    con = _console(stderr=True)
    con.print(
        f"{_styled(record.status, bold=True)} {record.id} in {_total(record):.1f}s"
        + (f" — {escape(record.message)}" if record.message else "")
    )
    con.print(f"outputs: {record.output_dir}")
    if record.status in (RunStatus.CANCELLED, RunStatus.FAILED):
        spec = record.spec_path
        if checkpoint is not None:
            con.print(f"resume from {checkpoint}: launch run {spec} --resume-from {record.id}")
        else:
            con.print(f"no checkpoint came home; run it again with: launch run {spec}")


def runs_table(records: list[RunRecord]) -> None:
    table = Table(box=None, header_style="bold")
    for col in ("RUN", "JOB", "TARGET", "STATUS", "STARTED", "TIME", "COST"):
        table.add_column(col)
    for r in records:
        cost = f"${r.cost_usd:.2f}" if r.cost_usd is not None else "-"
        table.add_row(
            r.id,
            r.job,
            r.target,
            _styled(r.status),
            _ago(r.created_at),
            f"{_total(r):.0f}s",
            cost,
        )
    if not records:
        _console().print("no runs yet; try `launch run jobs/hello.yaml`")
        return
    _console().print(table)


def run_details(record: RunRecord, live: TargetStatus | None) -> None:
    con = _console()
    con.print(f"[bold]{record.id}[/]  {record.job} on {record.target}: {_styled(record.status)}")
    if record.message:
        con.print(f"  {escape(record.message)}")
    if record.failure_reason:
        con.print(f"  reason: {record.failure_reason.value}")
    if record.exit_code is not None:
        con.print(f"  exit code: {record.exit_code}")
    con.print(f"  outputs: {record.output_dir}")
    if record.cost_usd is not None:
        price = f" at ${record.price_per_hour}/h" if record.price_per_hour else ""
        con.print(f"  cost: ${record.cost_usd:.4f}{price}")
    for what, amount in sorted(record.usage.items()):
        con.print(f"  used: {amount:g} {what.replace('_', ' ')}")
    if record.stop_reason is not None:
        con.print(f"  stop requested: {record.stop_reason.value}")
    for status, seconds in record.phase_durations():
        con.print(f"  {status.value:<12} {seconds:8.1f}s")
    if record.attempts:
        attempts_table(con, record)
    if live is not None:
        con.print(f"  live: {live.phase.value} {escape(live.message)}")
        if live.last_checkpoint:
            con.print(f"  last checkpoint: {live.last_checkpoint}")
        if live.last_metrics:
            con.print(f"  last metrics: {live.last_metrics}")


def attempts_table(con: Console, record: RunRecord) -> None:
    """One row per attempt: where it ran, for how long, why it ended, what it cost."""
    table = Table(box=None, header_style="bold", padding=(0, 1))
    for col in ("#", "WHERE", "HELD", "RAN", "ENDED", "COST"):
        table.add_column(col, justify="right" if col in ("#", "HELD", "RAN", "COST") else "left")
    for a in record.attempts:
        held = ((a.ended_at or utcnow()) - a.started_at).total_seconds()
        cost = a.cost()
        ended = a.end.value if a.end else "running"
        if a.message and a.end not in (None, AttemptEnd.SUCCEEDED):
            ended += f": {escape(a.message)}"
        used = "".join(f" +{v:g} {k.replace('_', ' ')}" for k, v in sorted(a.usage.items()))
        table.add_row(
            str(a.number),
            escape(a.where) or a.target,
            f"{held:.1f}s",
            f"{a.ran_s:.1f}s",
            ended,
            (f"${cost:.4f}" if cost is not None else "-") + used,
        )
    con.print("  attempts:")
    con.print(table)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def report_table(rows: list[Any]) -> None:
    con = _console()
    if not rows:
        con.print("no finished runs yet")
        return
    table = Table(box=None, header_style="bold")
    cols = ("JOB", "TARGET", "RUNS", "OK", "TRIES", "PREPARE", "START", "RUN", "PULL", "TOTAL")
    for col in cols:
        table.add_column(col, justify="left" if col in ("JOB", "TARGET") else "right")
    table.add_column("$/RUN", justify="right")
    table.add_column("$/TRY", justify="right")
    table.add_column("$ SUM", justify="right")
    for row in rows:
        m = row.median_s
        median = f"{row.median_cost_usd:.4f}" if row.median_cost_usd is not None else "-"
        total = f"{row.total_cost_usd:.4f}" if row.total_cost_usd is not None else "-"
        per_try = (
            f"{row.cost_per_attempt_usd:.4f}" if row.cost_per_attempt_usd is not None else "-"
        )
        table.add_row(
            row.job,
            row.target,
            str(row.runs),
            str(row.succeeded),
            str(row.attempts),
            *(f"{m[k]:.1f}s" for k in ("prepare", "start", "run", "pull", "total")),
            median,
            per_try,
            total,
        )
    con.print(table)
    con.print("[dim]medians over finished runs; cost = $/h x time resources were held[/]")


def plan_table(plan: Any, *, limit: int = 10) -> None:
    """`launch plan`: the options best first, then notes and problems."""
    con = _console()
    if plan.options:
        extra = sorted({k for o in plan.options[:limit] for k in o.details})
        table = Table(box=None, header_style="bold")
        for col in ("#", "OPTION", "GPU", "VRAM", "$/H", "EST. $", *(k.upper() for k in extra)):
            table.add_column(col, justify="left" if col in ("OPTION", "GPU") else "right")
        for i, o in enumerate(plan.options[:limit], 1):
            gpu = f"{o.gpu_count}x {o.gpu}" if o.gpu else "CPU"
            table.add_row(
                str(i),
                o.name,
                gpu,
                f"{o.gpu_ram_gb:g} GB" if o.gpu_ram_gb else "-",
                f"{o.price_per_hour:.3f}" if o.price_per_hour is not None else "?",
                f"{o.estimated_cost_usd:.2f}" if o.estimated_cost_usd is not None else "-",
                *(o.details.get(k, "") for k in extra),
            )
        con.print(table)
        if len(plan.options) > limit:
            con.print(f"[dim]... and {len(plan.options) - limit} more (--limit)[/]")
    else:
        con.print(f"no way to run this job on {plan.target}")
    for note in plan.notes:
        con.print(f"[dim]note:[/] {note}")
    for problem in plan.problems:
        con.print(f"[red]problem:[/] {problem}")


def plans_compared(plans: list[Any]) -> None:
    """`launch plan --target all`: each target's best option and what stands in its way."""
    con = _console()
    table = Table(box=None, header_style="bold")
    for col in ("TARGET", "BEST OPTION", "GPU", "$/H", "EST. $", "STATUS"):
        table.add_column(col, justify="right" if col in ("$/H", "EST. $") else "left")
    for plan in plans:
        best = plan.options[0] if plan.options else None
        status = "ok" if plan.runnable else escape(plan.problems[0] if plan.problems else "no fit")
        table.add_row(
            plan.target,
            best.name if best else "-",
            (f"{best.gpu_count}x {best.gpu}" if best.gpu else "CPU") if best else "-",
            f"{best.price_per_hour:.3f}" if best and best.price_per_hour is not None else "-",
            f"{best.estimated_cost_usd:.2f}"
            if best and best.estimated_cost_usd is not None
            else "-",
            status if plan.runnable else f"[red]{status}[/]",
        )
    con.print(table)
    con.print("[dim]`launch plan SPEC --target T` lists every option of one target[/]")
