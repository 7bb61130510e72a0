"""`python -m launcher.sim.kaggle [--port N]`: the Kaggle sim in the foreground; prints its URL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.sim.kaggle.sim import DEFAULT_USERS, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.sim.kaggle", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument(
        "--user",
        action="append",
        metavar="NAME:KEY",
        help="an account with a legacy API key (repeatable; default alice:0123456789abcdef)",
    )
    p.add_argument("--token", action="append", metavar="TOKEN:NAME", help="an API token")
    p.add_argument("--data-dir", type=Path, help="keep datasets/sessions here (default: temp)")
    p.add_argument("--image", default="launch-base:local", help="image kernels run in")
    p.add_argument("--runtime", choices=["auto", "docker", "process"], default="auto")
    p.add_argument("--session-seconds", type=float, default=12 * 3600)
    p.add_argument("--grace-seconds", type=float, default=30.0)
    p.add_argument("--queue-seconds", type=float, default=1.0)
    p.add_argument("--gpu-quota-seconds", type=float, default=30 * 3600)
    p.add_argument("--tpu-quota-seconds", type=float, default=20 * 3600)
    a = p.parse_args(argv)
    users = dict(u.split(":", 1) for u in a.user) if a.user else dict(DEFAULT_USERS)
    token_args: list[str] = a.token or []
    tokens = dict(t.split(":", 1) for t in token_args)

    def ready(url: str) -> None:
        print(url, flush=True)
        print(f"kaggle sim ready ({', '.join(users)}); Ctrl-C stops it", file=sys.stderr)

    serve(
        a.host,
        a.port,
        on_ready=ready,
        users=users,
        tokens=tokens,
        data_dir=a.data_dir,
        image=a.image,
        runtime=a.runtime,
        session_seconds=a.session_seconds,
        grace_seconds=a.grace_seconds,
        queue_seconds=a.queue_seconds,
        gpu_quota_seconds=a.gpu_quota_seconds,
        tpu_quota_seconds=a.tpu_quota_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
