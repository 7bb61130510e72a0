"""`launch auth ...`: consents a platform asks for in a browser (Colab's Google Drive).

Click only at import, like the rest of the CLI: the target's code loads inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def auth() -> None:
    """Sign in where a platform needs your consent in a browser."""


@auth.command("colab")
@click.option(
    "--client-secrets",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Your Google OAuth client (type Desktop app) as downloaded from the Cloud console "
    "[default: LAUNCH_COLAB_CLIENT_ID / LAUNCH_COLAB_CLIENT_SECRET].",
)
@click.option(
    "--no-browser",
    is_flag=True,
    help="Print the link instead of opening a browser; paste back where it ends.",
)
@click.option("--port", default=0, show_default=True, help="Loopback port of the redirect.")
def auth_colab(client_secrets: Path | None, no_browser: bool, port: int) -> None:
    """Allow launch to use your Google Drive (once): Colab runs reach their notebook through it.

    The refresh token is stored in $LAUNCH_HOME/colab/credentials.json, readable by you only.
    """
    from launcher.store.db import default_home
    from launcher.targets.colab.auth import authorize

    path = authorize(
        default_home(),
        client_secrets=client_secrets,
        browser=not no_browser and sys.stdin.isatty(),
        say=lambda m: click.echo(m, err=True),
        ask=lambda p: str(click.prompt(p, err=True)),
        port=port,
    )
    click.echo(f"saved Drive credentials to {path} (mode 0600)")
