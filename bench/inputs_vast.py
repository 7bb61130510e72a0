"""Delivering a 500 MB input to a Vast instance: downloaded by the instance itself, against
uploaded from here, first and second run.

Starts the Vast emulator (docker machines: a real container of the base image with a real sshd)
and a file server on 127.0.0.1 that the instance reaches through the emulator's egress relay
(launcher/sim/egress.py; a real instance reaches the internet), rents one instance, then:

1. upload from here: what the vast target does with a `path:` input, `push_tree` over `SftpDest`
   (manifest difference, sha256 checked), of a folder holding one 500 MB file; then again
   unchanged (the second run of a job on the same instance);
2. on-machine download: what it does with a `url:` input, launch_fetch run on the instance by
   the agent's own code (resumable GET, sha256 checked, into the instance's input cache); then
   again (the cache answers);
3. baseline: `scp` (OpenSSH) of the same file from here, for scale.

Bytes are counted where they are sent (push_tree's count; the file server's count). On this
machine every path is loopback, so the seconds compare the mechanisms, not the networks: on a
real rental the download comes from a datacenter's link and the upload from the user's.

    .venv/bin/python bench/inputs_vast.py [--runs 3] [--mb 500] [--append]
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vast_sync import KEY, bench_args, machine, rent, report  # noqa: E402
from launcher.sim.vast import VastSim  # noqa: E402
from launcher.sync import push_tree, tree_files  # noqa: E402
from launcher.targets.vast.sftp import SftpDest  # noqa: E402
from launcher.targets.vast.ssh import SshConn, ensure_key  # noqa: E402


class Served:
    """One file over HTTP from 127.0.0.1 (Range-capable), counting the bytes it sends."""

    def __init__(self, path: Path) -> None:
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                size = path.stat().st_size
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        self.wfile.write(block)
                        outer.sent += len(block)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def on_machine(conn: SshConn, item: dict[str, object], cache: str) -> tuple[float, int]:
    """launch_fetch on the instance, as the agent runs it; (seconds, bytes it downloaded)."""
    code = (
        "import json, sys; sys.path.insert(0, '/workspace/kit'); import launch_fetch as f; "
        f"r = f.fetch_one(json.loads(sys.argv[1]), {cache!r}, lambda m: None); "
        "print(r.downloaded)"
    )
    t0 = time.perf_counter()
    out = conn.check(
        f"python3 -c {shlex.quote(code)} {shlex.quote(json.dumps(item))}", timeout=600
    )
    return time.perf_counter() - t0, int(str(out).strip().splitlines()[-1])


def upload(conn: SshConn, folder: Path, remote: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = push_tree(tree_files(folder), SftpDest(conn, remote))
    return time.perf_counter() - t0, result.bytes_sent


def main() -> int:
    parser = bench_args(__doc__)
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, int]]] = {
        k: [] for k in ("up1", "up2", "down1", "down2", "scp")
    }
    with tempfile.TemporaryDirectory(prefix="inputs-bench-") as tmp:
        work = Path(tmp)
        folder = work / "input"
        folder.mkdir()
        data = folder / "clips.bin"
        with data.open("wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        digest = hashlib.sha256(data.read_bytes()).hexdigest()
        served = Served(data)
        sim = VastSim(
            api_key=KEY,
            loading_delay=0.1,
            running_delay=0.1,
            machines="docker",
            egress_ports=[served.port],
        )
        with sim:
            client, iid, conn = rent(sim, work / "home", args.base_image)
            try:
                kit = (ROOT / "launcher" / "launch_fetch.py").read_bytes()
                conn.check("mkdir -p /workspace/kit", timeout=30)
                conn.write_bytes("/workspace/kit/launch_fetch.py", kit)
                time.sleep(1.5)  # the relay in the container picks up the port within 1 s
                key = ensure_key(work / "home")[0]
                url = f"http://127.0.0.1:{served.port}/clips.bin"
                for run in range(args.runs):
                    remote = f"/workspace/up-{run}"
                    rows["up1"].append(upload(conn, folder, remote))
                    rows["up2"].append(upload(conn, folder, remote))
                    cache = f"/root/.cache/launch/inputs-{run}"
                    item = {"name": "clips", "kind": "url", "url": url, "sha256": digest}
                    before = served.sent
                    t, got = on_machine(conn, item, cache)
                    rows["down1"].append((t, served.sent - before))
                    assert got == data.stat().st_size, got
                    before = served.sent
                    t, got = on_machine(conn, item, cache)
                    rows["down2"].append((t, served.sent - before))
                    secs = scp_pull_to(key, conn, data)
                    rows["scp"].append((secs, data.stat().st_size))
                    conn.check(f"rm -rf {remote} {cache} /workspace/scp.bin", timeout=120)
            finally:
                conn.close()
                client.destroy_instance(iid)
                served.close()
    med = {k: statistics.median(t for t, _ in v) for k, v in rows.items()}
    sent = {k: v[-1][1] for k, v in rows.items()}
    mb = args.mb * (1 << 20) / 1e6

    def line(label: str, key: str) -> str:
        return (
            f"  {label:<44} {med[key]:7.2f} s  {sent[key] / 1e6:8.1f} MB sent  "
            f"({', '.join(f'{t:.2f}' for t, _ in rows[key])} s)"
        )

    lines = [
        f"### `bench/inputs_vast.py` (--runs {args.runs}, --mb {args.mb})",
        "",
        f"    .venv/bin/python bench/inputs_vast.py --runs {args.runs} --mb {args.mb}",
        "",
        "```",
        f"# inputs_vast.py  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# {machine()}, base image {args.base_image}",
        "",
        f"one {mb:.0f} MB input to an emulated Vast instance (docker + sshd), median of "
        f"{args.runs}:",
        line("upload from here, first run (push_tree)", "up1"),
        line("upload from here, second run (unchanged)", "up2"),
        line("on-machine download, first run (launch_fetch)", "down1"),
        line("on-machine download, second run (cached)", "down2"),
        line("baseline: scp of the same file from here", "scp"),
        f"  first run: on-machine download / upload from here  {med['up1'] / med['down1']:.2f}x "
        "(upload seconds / download seconds)",
        f"  first run: on-machine download / scp               {med['scp'] / med['down1']:.2f}x",
        f"  bytes from this machine: upload {sent['up1'] / 1e6:.1f} MB, on-machine 0 MB",
        "```",
        "",
    ]
    report(lines, args.append)
    return 0


def scp_pull_to(key: Path, conn: SshConn, data: Path) -> float:
    """scp of `data` from here to the instance (OpenSSH, same sshd and key)."""
    cmd = [
        "scp", "-q", "-i", str(key), "-P", str(conn.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        str(data), "root@127.0.0.1:/workspace/scp.bin",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    if shutil.which("scp") is None:
        raise SystemExit(
            "inputs_vast.py: OpenSSH's scp is missing (apt-get install openssh-client)"
        )
    sys.exit(main())
