"""Transfers with an emulated Vast instance: our pulls and pushes against OpenSSH's tools.

One instance of the Vast emulator (a container of the base image with a real sshd), one run of
this script, every case interleaved with its baseline (same sshd, same key), median of `--runs`:

- first pull of 2,000 files of 8 KB in 20 folders (tensorboard events, per-video outputs, label
  files): `pull_tree` over `ShellTree` (what `launch pull` does) against `rsync -a -e ssh`;
- the same through a delay proxy adding 20 ms of round trip (a host far away), both through it,
  and the 256 MB file below through it too;
- a pull when nothing changed, and when one file changed (each side sees the same change);
- one 256 MB file against `scp`;
- 20,000 files of 1 KB against `rsync -a` (goal: under 5 s);
- a push of 2,000 files of 8 KB (`push_tree` over `SftpDest`, what uploads do) against
  `rsync -a` the other way.

Each line ends with the speed ratio, baseline seconds / ours: 1.00x or more is at least as fast.

    .venv/bin/python bench/transfers.py [--runs 3] [--append]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delay_proxy import DelayProxy  # noqa: E402
from bench.vast_sync import KEY, bench_args, machine, rent, report  # noqa: E402
from launcher.sim.vast import VastSim  # noqa: E402
from launcher.sync import pull_tree, push_tree, tree_files  # noqa: E402
from launcher.targets.vast.sftp import SftpDest  # noqa: E402
from launcher.targets.vast.ssh import SshConn, ensure_key  # noqa: E402
from launcher.targets.vast.stream import ShellTree  # noqa: E402

MANY = "/workspace/many"  # 2,000 x 8 KB
TINY = "/workspace/tiny"  # 20,000 x 1 KB
BIG = "/workspace/big"  # one 256 MB file


def make_files(conn: SshConn, root: str, count: int, size: int, folders: int) -> None:
    make = (
        f"import os\nfor i in range({count}):\n"
        f"    d = '{root}/d%03d' % (i % {folders})\n"
        "    os.makedirs(d, exist_ok=True)\n"
        f"    open(d + '/f%05d.bin' % i, 'wb').write(os.urandom({size}))\n"
    )
    conn.check(f'python3 -c "{make}"', timeout=600)


def scp_base(key: Path, port: int) -> list[str]:
    return [
        "scp", "-q", "-i", str(key), "-P", str(port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip


class Bench:
    def __init__(self, conn: SshConn, key: Path, work: Path, runs: int) -> None:
        self.conn, self.work, self.runs = conn, work, runs
        self.key = key
        self.lines: list[str] = []
        self.n = 0

    def ssh(self, port: int) -> str:
        return (
            f"ssh -i {self.key} -p {port} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
        )

    def fresh(self, name: str) -> Path:
        self.n += 1
        return self.work / f"{name}-{self.n}"

    def rsync_pull(self, remote: str, dest: Path, port: int | None = None) -> None:
        ssh = self.ssh(port or self.conn.port)
        subprocess.run(
            ["rsync", "-a", "-e", ssh, f"root@127.0.0.1:{remote}/", str(dest)], check=True
        )

    def case(
        self,
        title: str,
        baseline_name: str,
        baseline: Callable[[], None],
        ours: Callable[[], None],
        before: Callable[[], None] = lambda: None,
        goal: str = "",
    ) -> None:
        theirs_s: list[float] = []
        ours_s: list[float] = []
        for _ in range(self.runs):
            before()
            t0 = time.perf_counter()
            baseline()
            theirs_s.append(time.perf_counter() - t0)
            before()
            t0 = time.perf_counter()
            ours()
            ours_s.append(time.perf_counter() - t0)
        o, t = statistics.median(ours_s), statistics.median(theirs_s)
        runs = ", ".join(f"{x:.2f}" for x in ours_s)
        self.lines.append(
            f"{title:<44} ours {o:7.2f} s  {baseline_name} {t:7.2f} s  {t / o:6.2f}x"
            f"{'  ' + goal if goal else ''}   (ours: {runs})"
        )
        print(self.lines[-1], flush=True)


def main() -> int:
    args = bench_args(__doc__).parse_args()
    for tool in ("rsync", "scp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"transfers.py: {tool} is missing here (apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="transfers-bench-") as tmp:
        work = Path(tmp)
        sim = VastSim(api_key=KEY, loading_delay=0.1, running_delay=0.1, machines="docker")
        with sim:
            client, iid, conn = rent(sim, work / "home", args.base_image)
            try:
                lines = run_cases(conn, ensure_key(work / "home")[0], work, args.runs)
            finally:
                conn.close()
                client.destroy_instance(iid)
    out = [
        f"### `bench/transfers.py` (--runs {args.runs})",
        "",
        "```",
        f"# transfers.py  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# {machine()}, base image {args.base_image}; median of {args.runs}, "
        "ratio = baseline s / ours",
        *lines,
        "```",
        "",
    ]
    report(out, args.append)
    return 0


def run_cases(conn: SshConn, key: Path, work: Path, runs: int) -> list[str]:
    make_files(conn, MANY, 2000, 8192, 20)
    make_files(conn, TINY, 20000, 1024, 100)
    conn.check(f"mkdir -p {BIG} && head -c {256 << 20} /dev/urandom > {BIG}/big.bin", timeout=300)
    b = Bench(conn, key, work, runs)

    def pull(remote: str, dest: Path, via: SshConn | None = None, files: int = 0) -> None:
        got = pull_tree(ShellTree(via or conn, remote), dest)
        if files and len(got.copied) != files:
            raise SystemExit(f"our pull copied {len(got.copied)} files, not {files}")

    b.case(
        "first pull, 2,000 x 8 KB",
        "rsync -a",
        lambda: b.rsync_pull(MANY, b.fresh("rsync")),
        lambda: pull(MANY, b.fresh("ours"), files=2000),
        goal="(goal >= 1)",
    )
    with DelayProxy(conn.port, 0.010) as proxy:
        far = SshConn("127.0.0.1", proxy.port, key, host_key=conn.host_key)
        far.connect()
        try:
            far_scp = [*scp_base(key, proxy.port)]
            b.case(
                "one 256 MB file, +20 ms RTT",
                "scp     ",
                lambda: subprocess.run(
                    [*far_scp, f"root@127.0.0.1:{BIG}/big.bin", str(b.fresh("scp-far.bin"))],
                    check=True,
                ),
                lambda: pull(BIG, b.fresh("ours-big-far"), via=far, files=1),
                goal="(keep >= 1)",
            )
            b.case(
                "first pull, 2,000 x 8 KB, +20 ms RTT",
                "rsync -a",
                lambda: b.rsync_pull(MANY, b.fresh("rsync-far"), proxy.port),
                lambda: pull(MANY, b.fresh("ours-far"), via=far, files=2000),
                goal="(goal >= 1)",
            )
        finally:
            far.close()
    synced_r, synced_o = b.fresh("rsync-synced"), b.fresh("ours-synced")
    b.rsync_pull(MANY, synced_r)
    pull(MANY, synced_o)
    b.case(
        "no-change pull, 2,000 files",
        "rsync -a",
        lambda: b.rsync_pull(MANY, synced_r),
        lambda: pull(MANY, synced_o),
        goal="(keep >= 1)",
    )
    counter = iter(range(10**6))

    def change_one() -> None:
        conn.check(f"head -c 8192 /dev/urandom > {MANY}/d007/f00007.bin # {next(counter)}")

    b.case(
        "one-changed pull, 2,000 files",
        "rsync -a",
        lambda: b.rsync_pull(MANY, synced_r),
        lambda: pull(MANY, synced_o, files=1),
        before=change_one,
        goal="(keep >= 1)",
    )
    scp = scp_base(key, conn.port)
    b.case(
        "one 256 MB file",
        "scp     ",
        lambda: subprocess.run(
            [*scp, f"root@127.0.0.1:{BIG}/big.bin", str(b.fresh("scp.bin"))], check=True
        ),
        lambda: pull(BIG, b.fresh("ours-big"), files=1),
        goal="(keep >= 1)",
    )
    tiny: list[float] = []

    def pull_tiny() -> None:
        t0 = time.perf_counter()
        pull(TINY, b.fresh("ours-tiny"), files=20000)
        tiny.append(time.perf_counter() - t0)

    b.case(
        "first pull, 20,000 x 1 KB",
        "rsync -a",
        lambda: b.rsync_pull(TINY, b.fresh("rsync-tiny")),
        pull_tiny,
    )
    b.lines[-1] += f"  [goal < 5 s: {'met' if statistics.median(tiny) < 5 else 'MISSED'}]"
    local = work / "push-src"
    for i in range(2000):
        path = local / f"d{i % 20:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(8192))
    pushes = iter(range(10**6))

    def ours_push() -> None:
        got = push_tree(tree_files(local), SftpDest(conn, f"/workspace/push-ours-{next(pushes)}"))
        if len(got.sent) != 2000:
            raise SystemExit(f"our push sent {len(got.sent)} files")

    b.case(
        "first push, 2,000 x 8 KB",
        "rsync -a",
        lambda: subprocess.run(
            [
                "rsync",
                "-a",
                "-e",
                b.ssh(conn.port),
                f"{local}/",
                f"root@127.0.0.1:/workspace/push-rsync-{next(pushes)}/",
            ],
            check=True,
        ),  # fmt: skip
        ours_push,
    )
    return b.lines


if __name__ == "__main__":
    sys.exit(main())
