"""The `launch` command: parse -> api call -> render. Nothing else lives here.

Start-up cost matters (`launch --help` must stay instant), so this module imports only click and
the error tree; pydantic, rich, docker and the targets load inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.cli.auth import auth
from launcher.cli.tools import image, sim
from launcher.errors import ExitStatus, LaunchError, SettingError

if TYPE_CHECKING:
    from launcher.api import Session
    from launcher.state import RunRecord


def _session(json_out: bool = False) -> Session:
    from launcher.api import Session
    from launcher.render import ConsoleReporter

    return Session(reporter=ConsoleReporter(quiet=json_out))


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _record_json(record: RunRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    data["phases"] = [
        {"status": s.value, "seconds": round(sec, 3)} for s, sec in record.phase_durations()
    ]
    return data


_ASKS_HELP = "launch.asks_help"


class _Group(click.Group):
    """The top group; it notes whether the command line asks for help anywhere (`launch ls -h`)
    while it still can: by the time the group's callback runs, click has taken the
    subcommand's arguments out of the context."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = args[: args.index("--")] if "--" in args else args
        ctx.meta[_ASKS_HELP] = any(a in ctx.help_option_names for a in options)
        return super().parse_args(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="launch", prog_name="launch")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """One job spec, any GPU: run a job on local docker, Vast.ai, Kaggle or Colab.

    \b
    launch run jobs/hello.yaml              run the demo job here, stream logs, pull outputs
    launch ls                               recent runs
    launch logs -f RUN                      follow a run's log
    launch report                           compare targets: time per stage, cost
    launch gc                               stop and free what dead launchers left behind
    """
    # every LAUNCH_* setting, once, before a command starts anything: one line per bad one,
    # rather than a crash deep inside a target. Help stays instant and works with bad settings.
    if ctx.resilient_parsing or ctx.meta.get(_ASKS_HELP):
        return
    from launcher.settings import validate_all

    if problems := validate_all():
        raise SettingError(problems)


# `launch image ...` and `launch sim ...` live in cli/tools.py (click only, as cheap as this)
cli.add_command(image)
cli.add_command(sim)
cli.add_command(auth)


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--target", "-t", default="local", show_default=True, help="Where to run.")
@click.option("--profile", "-p", help="Apply a named profile from the spec (e.g. smoke).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder [default: runs/<id>].")
@click.option(
    "--detach", "-d", is_flag=True, help="Start, then return; a background process follows it."
)
@click.option("--resume-from", metavar="RUN", help="Start from the newest checkpoint of RUN.")
@click.option(
    "--allow-outside-workload",
    "allow_outside",
    is_flag=True,
    help="Let the spec's workload folder lie outside the project (its files are uploaded).",
)
@click.option("--json", "json_out", is_flag=True, help="Print the final record as JSON.")
def run(
    spec: Path,
    target: str,
    profile: str | None,
    overrides: tuple[str, ...],
    out: Path | None,
    detach: bool,
    resume_from: str | None,
    allow_outside: bool,
    json_out: bool,
) -> None:
    """Run a job: validate, build, start, stream logs, pull outputs, clean up.

    Ctrl-C, SIGTERM and SIGHUP stop the job (it saves a checkpoint), pull and clean up; a
    second one abandons the cleanup and says how to finish it.
    """
    from launcher import api
    from launcher.attempts import resume_checkpoint
    from launcher.errors import RunCancelledError, RunFailedError
    from launcher.render import final_summary
    from launcher.state import RunStatus

    session = _session(json_out)
    record = api.run(
        session,
        spec,
        target=target,
        profile=profile,
        overrides=overrides,
        output_dir=out,
        detach=detach,
        resume_from=resume_from,
        allow_outside=allow_outside,
    )
    if json_out:
        _emit_json(_record_json(record))
    elif detach:
        click.echo(f"started {record.id}; follow it with `launch logs -f {record.id}`")
    checkpoint = resume_checkpoint(Path(record.output_dir))
    if not json_out and not detach:
        final_summary(record, checkpoint)
    if record.status.is_failed():
        raise RunFailedError(f"run {record.id} failed: {record.message or record.failure_reason}")
    if record.status is RunStatus.CANCELLED:
        kept = "its checkpoints were pulled" if checkpoint else "no checkpoint was saved"
        raise RunCancelledError(f"run {record.id} was cancelled; {kept}")


@cli.command()
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "--target",
    "-t",
    default="local",
    show_default=True,
    help="Where it would run; `all` compares every target side by side.",
)
@click.option("--profile", "-p", help="Apply a named profile from the spec.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@click.option("--limit", "-n", default=10, show_default=True, help="Options to show.")
@click.option(
    "--allow-outside-workload",
    "allow_outside",
    is_flag=True,
    help="Let the spec's workload folder lie outside the project (its files are uploaded).",
)
@click.option("--json", "json_out", is_flag=True, help="Print the plan as JSON.")
def plan(
    spec: Path,
    target: str,
    profile: str | None,
    overrides: tuple[str, ...],
    limit: int,
    allow_outside: bool,
    json_out: bool,
) -> None:
    """Show where a job would run and what it would cost, without starting anything.

    Exits 3 when the job cannot run on the target (with `--target all`: on any target) as the
    spec stands.
    """
    from launcher import api
    from launcher.errors import TargetUnavailableError

    if target == "all":
        plans = api.plan_all(
            _session(json_out),
            spec,
            profile=profile,
            overrides=overrides,
            allow_outside=allow_outside,
        )
        if json_out:
            _emit_json([p.model_dump(mode="json") for p in plans])
        else:
            from launcher.render import plans_compared

            plans_compared(plans)
        if not any(p.runnable for p in plans):
            raise TargetUnavailableError("the job cannot run on any target as it stands")
        return
    result = api.plan(
        _session(json_out),
        spec,
        target=target,
        profile=profile,
        overrides=overrides,
        allow_outside=allow_outside,
    )
    if json_out:
        _emit_json(result.model_dump(mode="json"))
    else:
        from launcher.render import plan_table

        plan_table(result, limit=limit)
    if not result.runnable:
        n = len(result.problems)
        raise TargetUnavailableError(
            f"the job cannot run on {target} as it stands"
            + (f" ({n} problem{'s' if n != 1 else ''} above)" if n else ": nothing fits")
        )


@cli.command("ls")
@click.option("--limit", "-n", default=20, show_default=True)
@click.option("--json", "json_out", is_flag=True)
def ls_(limit: int, json_out: bool) -> None:
    """List recent runs."""
    from launcher import api
    from launcher.render import runs_table

    records = api.list_runs(_session(json_out), limit=limit)
    if json_out:
        _emit_json([_record_json(r) for r in records])
    else:
        runs_table(records)


@cli.command()
@click.argument("run_ref", metavar="RUN", default="last")
@click.option("--refresh", is_flag=True, help="Probe the target; finish runs whose launcher died.")
@click.option("--json", "json_out", is_flag=True)
def status(run_ref: str, refresh: bool, json_out: bool) -> None:
    """Show one run (default: the newest)."""
    from launcher import api
    from launcher.render import run_details

    record, live = api.status(_session(json_out), run_ref, refresh=refresh)
    if json_out:
        data = _record_json(record)
        data["live"] = live.model_dump(mode="json") if live else None
        _emit_json(data)
    else:
        run_details(record, live)


@cli.command()
@click.argument("run_ref", metavar="RUN", default="last")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
def logs(run_ref: str, follow: bool, timestamps: bool) -> None:
    """Print a run's log (live while it runs, else the pulled copy)."""
    from launcher import api

    session = _session()
    shown = 0
    for line in api.logs(session, run_ref, follow=follow):
        text = f"{line.at} {line.text}" if timestamps else line.text
        click.echo(text, err=line.stream == "err")
        shown += 1
    if not shown and not follow:
        record = session.store.resolve(run_ref)
        if not record.status.is_terminal():
            click.echo(
                f"no log yet: run {record.id} is {record.status.value} "
                f"(`launch logs -f {record.id}` follows it from its first line)",
                err=True,
            )


@cli.command()
@click.argument("run_ref", metavar="RUN", default="last")
@click.option("--out", type=click.Path(path_type=Path), help="Folder [default: the run folder].")
@click.option("--json", "json_out", is_flag=True)
def pull(run_ref: str, out: Path | None, json_out: bool) -> None:
    """Fetch a run's outputs, checkpoints and logs (incremental, verified)."""
    from launcher import api
    from launcher.state import ResourceState

    session = _session(json_out)
    ref = session.store.resolve(run_ref).id
    kept = any(r.state is ResourceState.KEPT for r in session.store.resources(run_id=ref))
    record, result = api.pull(session, run_ref, dest=out)
    if json_out:
        _emit_json(result.model_dump(mode="json"))
        return
    dest = out or record.output_dir
    if record.handle is None:
        state = "has not started yet" if not record.status.is_terminal() else "never started"
        click.echo(f"nothing to pull: run {record.id} {state}")
        return
    click.echo(
        f"{len(result.copied)} file(s) pulled ({result.bytes_copied} bytes), "
        f"{result.skipped_unchanged} unchanged -> {dest}"
    )
    for path in result.changed_during_copy:
        click.echo(f"  still being written, pull again later: {path}")
    if kept and not result.changed_during_copy:
        click.echo(f"everything is home: `launch gc` frees the machine kept for {record.id}")


@cli.command()
@click.option("--job", help="Only this job.")
@click.option("--json", "json_out", is_flag=True)
def report(job: str | None, json_out: bool) -> None:
    """Compare targets on measured time per stage and cost (finished runs)."""
    from launcher import api
    from launcher.render import report_table

    rows = api.report(_session(json_out), job=job)
    if json_out:
        _emit_json([row.model_dump(mode="json") for row in rows])
    else:
        report_table(rows)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--no-wait", is_flag=True, help="Ask it to stop and return at once.")
def cancel(run_ref: str, no_wait: bool) -> None:
    """Stop a run; the job saves a checkpoint first."""
    from launcher import api

    record = api.cancel(_session(), run_ref, wait=not no_wait)
    click.echo(f"{record.id}: {record.status.value}")


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do it without asking.")
@click.option("--target", "targets", multiple=True, default=("local",), show_default=True)
@click.option(
    "--all-owners",
    is_flag=True,
    help="Also free what other stores on the same account (another machine's launch, or an "
    "older launch that labelled without a store key) made; by default gc only lists them.",
)
@click.option(
    "--discard-kept",
    is_flag=True,
    help="Also free machines kept because a run's last pull failed, giving up what did not "
    "come home (by default gc keeps them until `launch pull RUN` has it).",
)
def gc(yes: bool, targets: tuple[str, ...], all_owners: bool, discard_kept: bool) -> None:
    """Stop runs whose launcher died and free resources nobody owns.

    Without --yes (and no terminal to confirm at) it only lists what it would do.
    """
    from launcher.gc import apply_gc, plan_gc

    session = _session()
    plan = plan_gc(session, targets, all_owners=all_owners, discard_kept=discard_kept)
    for line in plan.skipped:
        click.echo(f"  {line}")
    if not plan.actions:
        click.echo("nothing to clean up")
        return
    for action in plan.actions:
        click.echo(f"  {action.what}")
    # a listing is a dry run that succeeded: exit 0, not an error
    if not yes and not (sys.stdin.isatty() and click.confirm("do it?")):
        flags = [
            *(f"--target {t}" for t in targets),
            *(["--all-owners"] * all_owners),
            *(["--discard-kept"] * discard_kept),
        ]
        click.echo(f"nothing done (`launch gc {' '.join([*flags, '--yes'])}` does it)")
        return
    for line in apply_gc(session, plan.actions):
        click.echo(line)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check job specs; one line per problem."""
    from launcher import api
    from launcher.errors import SpecError

    problems = api.validate(list(files))
    if problems:
        raise SpecError(problems)
    click.echo(f"{len(files)} spec(s) OK")


@cli.command()
def schema() -> None:
    """Print the job spec's JSON Schema (for editors)."""
    from launcher import api

    _emit_json(api.schema())


@cli.command("_supervise", hidden=True)
@click.argument("run_ref")
def supervise_(run_ref: str) -> None:
    """Follow a detached run to its end (started by `launch run --detach`)."""
    from launcher import api

    api.supervise(_session(), run_ref)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place errors become messages and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="launch", standalone_mode=False)
    except LaunchError as e:
        if debug:
            raise
        click.secho("error: ", fg="red", bold=True, err=True, nl=False)
        click.echo(e.render(), err=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception:
        if debug:
            raise
        import traceback

        last = traceback.format_exc().strip().splitlines()[-1]
        click.echo(f"internal error: {last}\n  rerun with --debug for the traceback", err=True)
        sys.exit(ExitStatus.BUG)
    sys.exit(ExitStatus.OK)
