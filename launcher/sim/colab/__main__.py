"""`python -m launcher.sim.colab --drive-url URL [--port N]`: the Colab sim in the foreground."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launcher.sim.colab.sim import serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.sim.colab", description=__doc__)
    p.add_argument(
        "--drive-url", required=True, help="the Drive emulator (launch sim serve drive)"
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--data-dir", type=Path, help="session folders (default: temp)")
    p.add_argument("--python", help="the runtime's Python, with ipykernel (default: this one)")
    p.add_argument("--session-seconds", type=float, default=12 * 3600)
    p.add_argument("--idle-seconds", type=float, default=None)
    p.add_argument("--sync-seconds", type=float, default=1.0, help="Drive mount sync period")
    p.add_argument("--secrets", type=Path, help='Colab Secrets as JSON {"NAME": "value"}')
    p.add_argument("--auto-open", action="store_true", help="open every new notebook at once")
    a = p.parse_args(argv)
    secrets: dict[str, str | None] = json.loads(a.secrets.read_text()) if a.secrets else {}

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"colab sim ready; export LAUNCH_COLAB_URL={url}; Ctrl-C stops it", file=sys.stderr)

    serve(
        a.host,
        a.port,
        on_ready=ready,
        drive_url=a.drive_url,
        data_dir=a.data_dir,
        python=a.python,
        session_seconds=a.session_seconds,
        idle_seconds=a.idle_seconds,
        sync_seconds=a.sync_seconds,
        secrets=secrets,
        auto_open=a.auto_open,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
