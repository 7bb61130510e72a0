"""Sync over the Vast target's SSH path, against OpenSSH, on an emulated instance.

Starts the Vast emulator (`launcher.sim.vast`, docker machines: a real container of the base
image with a real sshd), rents one instance through our REST client and attaches the launcher's
key, then measures, interleaved in the same process run:

1. Pull of one 256 MB file (random bytes, made on the instance): our path, `pull_tree` over
   `ShellTree` (one exec channel lists, one sends: the instance's python3 hashes what it
   sends; sha256 here while writing, compared; synced and atomic install), against `scp`
   (OpenSSH) of the same file from the same sshd with the same key. Reported as MB/s each
   and ours/scp (goal >= 0.7); also, for reference, the file read through paramiko's SFTP
   subsystem alone.
2. Re-upload by manifest diff: a 100-file, 50 MB workload pushed with `push_tree` over
   `SftpDest`, then again after one file changed: bytes sent as % of the full upload
   (goal < 5%).

Unlike the other scripts this one imports the launcher (it measures the launcher's own SFTP
code), so it runs with the project venv:

    .venv/bin/python bench/vast_sync.py [--runs 3] [--base-image launch-base:local] [--append]

`--append` adds the figures, with the date and machine, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.sim.vast import VastSim  # noqa: E402
from launcher.sync import pull_tree, push_tree, tree_files  # noqa: E402
from launcher.targets.vast.client import VastClient  # noqa: E402
from launcher.targets.vast.sftp import SftpDest  # noqa: E402
from launcher.targets.vast.ssh import SshConn, ensure_key  # noqa: E402
from launcher.targets.vast.stream import ShellTree  # noqa: E402

BIG_MB = 256
GOAL_RATIO = 0.7
GOAL_REUPLOAD_PCT = 5.0
KEY = "bench-key"


def machine() -> str:
    """This machine as the result blocks name it."""
    system = f"{platform.system()} {platform.release()}"
    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cpus, {system})"


def bench_args(doc: str | None) -> argparse.ArgumentParser:
    """The options every emulated-instance bench has: --runs, --base-image, --append."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--base-image", default=os.environ.get("LAUNCH_TEST_BASE_IMAGE", "launch-base:local")
    )
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    return parser


def report(lines: list[str], append: bool) -> None:
    """Print a result block; with `append`, add it to bench/RESULTS.md too."""
    text = "\n".join(lines)
    print(text)
    if append:
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write("\n" + text)


def die(message: str) -> None:
    print(f"vast_sync.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def rent(sim: VastSim, home: Path, image: str) -> tuple[VastClient, int, SshConn]:
    client = VastClient(sim.url, KEY)
    offer = client.search_offers({"order": [["dph_total", "asc"]], "limit": 1})[0]
    key_path, public = ensure_key(home)
    iid = client.create_instance(
        int(offer["id"]), {"client_id": "me", "image": image, "disk": 10, "runtype": "ssh"}
    )
    deadline = time.monotonic() + 120
    row = client.show_instance(iid)
    while not (row and row.actual_status == "running"):
        if time.monotonic() > deadline:
            die(f"instance {iid} did not reach running: {row}")
        time.sleep(0.3)
        row = client.show_instance(iid)
    client.attach_ssh_key(iid, public)
    addr = row.ssh_address()
    if addr is None:
        die("the instance shows no ssh address")
    conn = SshConn(addr[0], addr[1], key_path)
    for _ in range(60):
        try:
            conn.connect()
            break
        except Exception:  # noqa: BLE001 - sshd still starting
            time.sleep(0.5)
    else:
        die(f"ssh to {addr} never answered")
    return client, iid, conn


def scp_pull(key: Path, port: int, remote: str, dest: Path) -> float:
    cmd = [
        "scp", "-q", "-i", str(key), "-P", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        f"root@127.0.0.1:{remote}", str(dest),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def our_pull(conn: SshConn, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    result = pull_tree(ShellTree(conn, "/workspace/bench"), dest)
    took = time.perf_counter() - t0
    if result.copied != ["big.bin"]:
        die(f"our pull copied {result.copied}")
    return took


def sftp_read(conn: SshConn, remote: str) -> float:
    """Reference: the file through the SFTP subsystem alone (paramiko, prefetch), bytes
    discarded, nothing verified: what pulls of big files used before the hashing stream."""
    t0 = time.perf_counter()
    with conn.sftp().open(remote, "rb") as f:
        f.prefetch()
        while f.read(1 << 20):
            pass
    return time.perf_counter() - t0


def reupload(conn: SshConn, work: Path) -> tuple[int, int, float, float]:
    local = work / "workload"
    for i in range(100):  # 100 files, 50 MB
        path = local / f"pkg{i // 10}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(500_000))
    dest = SftpDest(conn, "/workspace/push-bench")
    t0 = time.perf_counter()
    full = push_tree(tree_files(local), dest)
    t_full = time.perf_counter() - t0
    (local / "pkg4" / "f042.bin").write_bytes(os.urandom(500_000))
    t0 = time.perf_counter()
    again = push_tree(tree_files(local), dest)
    t_again = time.perf_counter() - t0
    if again.sent != ["pkg4/f042.bin"]:
        die(f"the re-upload sent {again.sent}")
    return full.bytes_sent, again.bytes_sent, t_full, t_again


def main() -> int:
    args = bench_args(__doc__).parse_args()
    if shutil.which("scp") is None:
        die("OpenSSH's scp is missing (apt-get install openssh-client)")
    if subprocess.run(
        ["docker", "image", "inspect", args.base_image], capture_output=True
    ).returncode:
        die(f"no docker image {args.base_image} (scripts/build-base-image.sh)")
    with tempfile.TemporaryDirectory(prefix="vast-bench-") as tmp:
        work = Path(tmp)
        sim = VastSim(api_key=KEY, loading_delay=0.1, running_delay=0.1, machines="docker")
        with sim:
            client, iid, conn = rent(sim, work / "home", args.base_image)
            try:
                conn.check(
                    f"mkdir -p /workspace/bench && head -c {BIG_MB << 20} /dev/urandom "
                    "> /workspace/bench/big.bin",
                    timeout=300,
                )
                key = ensure_key(work / "home")[0]
                ours_s: list[float] = []
                scp_s: list[float] = []
                sftp_s: list[float] = []
                our_pull(conn, work / "warm")  # warm-up: page cache on both sides
                for _ in range(args.runs):
                    scp_s.append(
                        scp_pull(key, conn.port, "/workspace/bench/big.bin", work / "scp.bin")
                    )
                    ours_s.append(our_pull(conn, work / "ours"))
                    sftp_s.append(sftp_read(conn, "/workspace/bench/big.bin"))
                full, again, t_full, t_again = reupload(conn, work)
            finally:
                conn.close()
                client.destroy_instance(iid)
    mb = float(BIG_MB << 20) / 1e6
    ours_mbs, scp_mbs = mb / statistics.median(ours_s), mb / statistics.median(scp_s)
    ratio = ours_mbs / scp_mbs
    pct = 100.0 * again / full
    lines = [
        f"### `bench/vast_sync.py` (--runs {args.runs})",
        "",
        f"    .venv/bin/python bench/vast_sync.py --runs {args.runs}",
        "",
        "```",
        f"# vast_sync.py  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# {machine()}, base image {args.base_image}",
        "",
        f"pull of one {BIG_MB} MB file from an emulated Vast instance (docker + sshd), "
        f"median of {args.runs}:",
        f"  ours (pull_tree over ShellTree: paramiko, sha256 both ends) {ours_mbs:8.1f} MB/s"
        f"  ({', '.join(f'{s:.2f}' for s in ours_s)} s)",
        f"  scp (OpenSSH)                                           {scp_mbs:8.1f} MB/s"
        f"  ({', '.join(f'{s:.2f}' for s in scp_s)} s)",
        f"  ours / scp                                              {ratio:8.2f}x",
        f"  reference: paramiko SFTP read alone (no verify)         "
        f"{mb / statistics.median(sftp_s):8.1f} MB/s",
        "re-upload by manifest diff, 100 files / 50 MB, one file changed:",
        f"  full upload {full / 1e6:.1f} MB in {t_full:.2f} s; re-upload {again / 1e6:.2f} MB "
        f"in {t_again:.2f} s = {pct:.2f}% of the bytes",
        "goals:",
        f"  [{'met' if ratio >= GOAL_RATIO else 'MISSED'}] pull >= {GOAL_RATIO}x scp "
        f"({ratio:.2f}x)",
        f"  [{'met' if pct < GOAL_REUPLOAD_PCT else 'MISSED'}] re-upload < {GOAL_REUPLOAD_PCT:g}% "
        f"({pct:.2f}%)",
        "```",
        "",
    ]
    report(lines, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
