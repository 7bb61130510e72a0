"""`python -m launcher.sim.vast [--port N]`: serve in the foreground, print the URL when ready."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.sim.vast.sim import DEFAULT_API_KEY, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.sim.vast", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--api-key", default=DEFAULT_API_KEY, help="the accepted key; '' accepts any")
    p.add_argument("--catalog", type=Path, help="JSON list of offers (default: built-in)")
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--loading-delay", type=float, default=1.0)
    p.add_argument("--running-delay", type=float, default=1.0)
    p.add_argument("--machines", choices=["auto", "docker", "process"], default="auto")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    a = p.parse_args(argv)

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"api key: {a.api_key or '(any)'}  (VAST_URL={url})", file=sys.stderr, flush=True)

    try:  # serve() turns SIGTERM and SIGHUP into a stop that removes every machine
        serve(
            a.host,
            a.port,
            on_ready=ready,
            state_dir=a.state_dir,
            api_key=a.api_key or None,
            catalog=a.catalog,
            loading_delay=a.loading_delay,
            running_delay=a.running_delay,
            machines=a.machines,
            verbose=a.verbose,
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
