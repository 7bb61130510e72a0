"""`launch image ...` and `launch sim ...`: the commands around runs rather than of them.

Same rules as the rest of the CLI: click only at import time; everything else inside the
commands.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from launcher.sim.stack import Stack


@click.group()
def image() -> None:
    """Build job images."""


@image.command("build")
@click.argument("name")
@click.option("--base-image", help="BASE_IMAGE build argument [default: $LAUNCH_BASE_IMAGE].")
@click.option(
    "--requirements",
    default="requirements.txt",
    show_default=True,
    help="Requirements file of the image folder (REQUIREMENTS build argument).",
)
@click.option("--force", is_flag=True, help="Build even when this content was built before.")
@click.option("--root", type=click.Path(path_type=Path), default=Path("."), show_default=True)
def image_build(
    name: str, base_image: str | None, requirements: str, force: bool, root: Path
) -> None:
    """Build images/NAME, tagged by its content hash; skipped when unchanged.

    Extra pip arguments for this machine (a local wheel server) come from $LAUNCH_PIP_EXTRA_ARGS.
    """
    from launcher import api
    from launcher.api import Session
    from launcher.render import ConsoleReporter

    ref = api.build_image(
        Session(reporter=ConsoleReporter()),
        name,
        project_root=root.resolve(),
        base_image=base_image,
        requirements=requirements,
        force=force,
    )
    verb = "built" if ref.built else "up to date:"
    click.echo(f"{verb} {ref.tag} ({ref.seconds:.1f}s)")


def _exports(platform: str, url: str) -> str:
    """What to paste into a shell so `launch` (and the platform's own CLI) use the emulator."""
    from launcher.sim.stack import launch_env

    env = launch_env(platform, url)
    out = "# launch:\nexport " + " ".join(f"{k}={v}" for k, v in env.items())
    if platform == "drive":
        from launcher.sim.drive.sim import DEFAULT_USER

        out += f"\n# then: launch auth colab (the emulator consents as {DEFAULT_USER} at once)"
    elif platform == "colab":
        out += (
            "\n# with the Drive emulator's exports, the links `launch run --target colab` "
            "prints open a session here (--auto-open opens each new notebook at once)"
        )
    elif platform == "vast":
        out += f"\n# the vastai CLI:\nexport VAST_URL={url} VAST_API_KEY={env['VAST_API_KEY']}"
    elif platform == "kaggle":
        user, key = env["KAGGLE_USERNAME"], env["KAGGLE_KEY"]
        out += (
            "\n# the kaggle CLI:\nexport KAGGLE_API_ENVIRONMENT=LOCALHOST "
            f"HTTP_PROXY={url} KAGGLE_USERNAME={user} KAGGLE_KEY={key}"
        )
    return out


@click.group()
def sim() -> None:
    """Local emulators of the platforms, speaking their real wire protocols."""


@sim.command("serve")
@click.argument("platform", type=click.Choice(["vast", "kaggle", "drive", "colab"]))
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Keep the emulator's state (instances' keys, datasets, kernel folders, Drive file "
    "contents) here "
    "[default: a temporary folder]. Kaggle kernels bind-mount from it, so a containerised "
    "emulator needs it at the same path on the host (compose.yaml does this).",
)
@click.option(
    "--kernel-image",
    default="launch-base:local",
    show_default=True,
    help="kaggle: the image kernels run in (Kaggle's own image stands in for it).",
)
@click.option("--drive-url", help="colab: the Drive emulator its notebooks live in (required).")
@click.option(
    "--auto-open",
    is_flag=True,
    envvar="LAUNCH_SIM_AUTO_OPEN",
    help="colab: run each new notebook at once [env: LAUNCH_SIM_AUTO_OPEN=1].",
)
@click.option(
    "--machines",
    type=click.Choice(["auto", "docker", "process"]),
    default="auto",
    show_default=True,
    help="vast: what an instance is: a container of its image (docker), a process behind its "
    "own sshd (process: shares this host's files, ignores the image), or docker when an "
    "engine answers (auto; it says so when it falls back).",
)
@click.option(
    "--egress",
    "egress",
    multiple=True,
    type=int,
    help="vast, kaggle: instances (kernels with internet) reach this host's 127.0.0.1:PORT at "
    "their own 127.0.0.1:PORT (the Kaggle emulator, a file server), as real ones reach the "
    "internet. Repeatable.",
)
def sim_serve(
    platform: str,
    port: int,
    state_dir: Path | None,
    kernel_image: str,
    drive_url: str | None,
    auto_open: bool,
    machines: str,
    egress: tuple[int, ...],
) -> None:
    """Run an emulator on 127.0.0.1 in the foreground; prints its URL once it answers, then the
    exports to paste (the URL and the credentials it accepts). Ctrl-C or SIGTERM stops it and
    removes every machine and kernel container it made.
    """
    import importlib

    def ready(url: str) -> None:
        click.echo(url)  # first line on stdout: scripts read it
        click.echo(_exports(platform, url), err=True)

    options: dict[str, Any] = {}
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        options["state_dir" if platform == "vast" else "data_dir"] = state_dir.resolve()
    if platform == "kaggle":
        options["image"] = kernel_image
    if platform == "vast":
        options["machines"] = machines
    if egress and platform not in ("vast", "kaggle"):
        raise click.UsageError("--egress is for the vast and kaggle emulators")
    if egress:
        options["egress_ports"] = list(egress)
    if platform == "colab":
        if not drive_url:
            raise click.UsageError("launch sim serve colab needs --drive-url (the Drive emulator)")
        options.update(drive_url=drive_url, auto_open=auto_open)
    module = importlib.import_module(f"launcher.sim.{platform}")
    try:
        module.serve(host="127.0.0.1", port=port, on_ready=ready, **options)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        from launcher.errors import TargetUnavailableError

        raise TargetUnavailableError(
            f"127.0.0.1:{port} is already in use: another `launch sim serve {platform}`?",
            hint="--port 0 picks a free port; `launch sim status` shows a running stack",
        ) from e


def _stack_call(fn: Callable[[], Any]) -> Any:
    """Run a stack step; its StackError becomes the CLI's one-line error (exit 3)."""
    from launcher.errors import TargetUnavailableError
    from launcher.sim.stack import StackError

    try:
        return fn()
    except StackError as e:
        raise TargetUnavailableError(str(e)) from e


def _say(message: str) -> None:
    click.echo(f"› {message}", err=True)


@sim.command("up")
@click.option("--with-registry", is_flag=True, help="Also an image registry on 127.0.0.1:5000.")
@click.option(
    "--runner",
    type=click.Choice(["auto", "compose", "process"]),
    default="auto",
    show_default=True,
    help="compose.yaml with whichever compose this machine has, or detached processes "
    "(auto: compose when it and a docker engine are here).",
)
@click.option("--auto-open", is_flag=True, help="colab: run each new notebook at once.")
def sim_up(with_registry: bool, runner: str, auto_open: bool) -> None:
    """Start every emulator (Vast, Kaggle, Drive, Colab) on 127.0.0.1:8765-8768 and wait until
    each answers; then `eval "$(launch sim env)"` points launch at them.
    LAUNCH_SIM_<SERVICE>_PORT moves a service, LAUNCH_SIM_STATE the state [/tmp/launch-sim]."""
    from launcher.sim import stack

    up = _stack_call(
        lambda: stack.up(
            runner=runner, with_registry=with_registry, auto_open=auto_open, say=_say
        )
    )
    _print_status(up)
    click.echo('next: eval "$(launch sim env)"', err=True)


@sim.command("down")
def sim_down() -> None:
    """Stop the stack `launch sim up` started, and every machine and kernel it made."""
    from launcher.sim import stack

    if _stack_call(lambda: stack.down(_say)) is None:
        click.echo(f"no stack is up (nothing recorded in {stack.state_dir()})", err=True)


@sim.command("status")
def sim_status() -> None:
    """Each service of the stack: up or down, and its URL."""

    _print_status(_current())


@sim.command("env")
def sim_env() -> None:
    """The exports that point launch at the stack: `eval "$(launch sim env)"`."""
    from launcher.sim import stack

    click.echo(stack.exports(_current()))


def _current() -> Stack:
    from launcher.errors import TargetUnavailableError
    from launcher.sim import stack

    current = stack.load()
    if current is None:
        raise TargetUnavailableError(
            f"no emulator stack is up (nothing recorded in {stack.state_dir()})",
            hint="launch sim up [--with-registry]",
        )
    return current


def _print_status(current: Stack) -> None:
    from launcher.sim import stack

    click.echo(f"stack ({current.runner}), state {current.state_dir}:")
    for service, state, url in stack.status_rows(current):
        click.echo(f"  {service:<9} {state:<5} {url}")
