"""Many small files pulled from an emulated Vast instance: our pull against `rsync -a`.

The first case of issue 12's transfer bench (more cases join it as the stream path lands):
the first pull of a run folder of N files of 8 KB in 20 folders (tensorboard events, per-video
outputs, label files), from an instance of the Vast emulator (a container with a real sshd),
by `pull_tree` over `SftpTree` (what `launch pull` does), against `rsync -a -e ssh` of the same
folder from the same sshd with the same key. Interleaved, median of `--runs`; each line ends with
the speed ratio (rsync seconds / ours: 1.00x or more means at least as fast).

    .venv/bin/python bench/transfers.py [--runs 3] [--files 2000] [--append]
"""

from __future__ import annotations

import argparse
import os
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

from bench.vast_sync import KEY, machine, rent, report  # noqa: E402
from launcher.sim.vast import VastSim  # noqa: E402
from launcher.sync import pull_tree  # noqa: E402
from launcher.targets.vast.sftp import SftpTree  # noqa: E402
from launcher.targets.vast.ssh import ensure_key  # noqa: E402

REMOTE = "/workspace/many"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument(
        "--base-image", default=os.environ.get("LAUNCH_TEST_BASE_IMAGE", "launch-base:local")
    )
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("transfers.py: rsync is missing here (apt-get install rsync)")
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="transfers-bench-") as tmp:
        work = Path(tmp)
        sim = VastSim(api_key=KEY, loading_delay=0.1, running_delay=0.1, machines="docker")
        with sim:
            client, iid, conn = rent(sim, work / "home", args.base_image)
            try:
                make = (
                    f"import os\nfor i in range({args.files}):\n"
                    f"    d = '{REMOTE}/d%02d' % (i % 20)\n"
                    "    os.makedirs(d, exist_ok=True)\n"
                    "    open(d + '/f%05d.bin' % i, 'wb').write(os.urandom(8192))\n"
                )
                conn.check(f'python3 -c "{make}"', timeout=300)
                key = ensure_key(work / "home")[0]
                ssh = (
                    f"ssh -i {key} -p {conn.port} -o StrictHostKeyChecking=no "
                    "-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
                )
                for run in range(args.runs):
                    dest = work / f"rsync-{run}"
                    t0 = time.perf_counter()
                    subprocess.run(
                        ["rsync", "-a", "-e", ssh, f"root@127.0.0.1:{REMOTE}/", str(dest)],
                        check=True,
                    )
                    theirs.append(time.perf_counter() - t0)
                    dest = work / f"ours-{run}"
                    t0 = time.perf_counter()
                    result = pull_tree(SftpTree(conn, REMOTE), dest)
                    ours.append(time.perf_counter() - t0)
                    if len(result.copied) != args.files:
                        raise SystemExit(f"our pull copied {len(result.copied)} files")
            finally:
                conn.close()
                client.destroy_instance(iid)
    o, t = statistics.median(ours), statistics.median(theirs)
    lines = [
        f"### `bench/transfers.py` (--runs {args.runs}, --files {args.files})",
        "",
        "```",
        f"# transfers.py  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# {machine()}, base image {args.base_image}",
        f"first pull of {args.files} x 8 KB in 20 folders from an emulated Vast instance, "
        f"median of {args.runs}:",
        f"  ours (pull_tree over SftpTree)  {o:7.2f} s  ({', '.join(f'{x:.2f}' for x in ours)})",
        f"  rsync -a -e ssh                 {t:7.2f} s  ({', '.join(f'{x:.2f}' for x in theirs)})",
        f"  speed ratio (rsync / ours)      {t / o:7.2f}x",
        "```",
        "",
    ]
    report(lines, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
