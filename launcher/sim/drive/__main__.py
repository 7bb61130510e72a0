"""`python -m launcher.sim.drive [--port N]`: the Drive sim in the foreground; prints its URL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.sim.drive.sim import DEFAULT_USER, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.sim.drive", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--data-dir", type=Path, help="keep file contents here (default: temp)")
    a = p.parse_args(argv)

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"drive sim ready (consents as {DEFAULT_USER}); Ctrl-C stops it", file=sys.stderr)

    serve(a.host, a.port, on_ready=ready, data_dir=a.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
