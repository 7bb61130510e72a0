"""`launch image ...` and `launch sim ...`: the commands around runs rather than of them.

Same rules as the rest of the CLI: click only at import time; everything else inside the
commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


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
    if platform == "drive":
        from launcher.sim.drive.sim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER

        return (
            f"# launch:\nexport LAUNCH_DRIVE_URL={url}\n"
            f"export LAUNCH_COLAB_CLIENT_ID={DEFAULT_CLIENT_ID} "
            f"LAUNCH_COLAB_CLIENT_SECRET={DEFAULT_CLIENT_SECRET}\n"
            f"# then: launch auth colab (the emulator consents as {DEFAULT_USER} at once)"
        )
    if platform == "colab":
        return (
            f"# launch (with the Drive emulator's exports):\nexport LAUNCH_COLAB_URL={url}\n"
            "# the links `launch run --target colab` prints now open a session here "
            "(--auto-open opens each new notebook at once)"
        )
    if platform == "vast":
        from launcher.sim.vast.sim import DEFAULT_API_KEY

        return (
            f"# launch:\nexport LAUNCH_VAST_URL={url} VAST_API_KEY={DEFAULT_API_KEY}\n"
            f"# the vastai CLI:\nexport VAST_URL={url} VAST_API_KEY={DEFAULT_API_KEY}"
        )
    from launcher.sim.kaggle.sim import DEFAULT_USERS

    user, key = next(iter(DEFAULT_USERS.items()))
    return (
        f"# launch:\nexport LAUNCH_KAGGLE_URL={url} KAGGLE_USERNAME={user} KAGGLE_KEY={key}\n"
        "# the kaggle CLI:\nexport KAGGLE_API_ENVIRONMENT=LOCALHOST "
        f"HTTP_PROXY={url} KAGGLE_USERNAME={user} KAGGLE_KEY={key}"
    )


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
@click.option("--auto-open", is_flag=True, help="colab: run each new notebook at once.")
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
    if egress and platform not in ("vast", "kaggle"):
        raise click.UsageError("--egress is for the vast and kaggle emulators")
    if egress:
        options["egress_ports"] = list(egress)
    if platform == "colab":
        if not drive_url:
            raise click.UsageError("launch sim serve colab needs --drive-url (the Drive emulator)")
        options.update(drive_url=drive_url, auto_open=auto_open)
    module = importlib.import_module(f"launcher.sim.{platform}")
    module.serve(host="127.0.0.1", port=port, on_ready=ready, **options)
