"""The Colab target over the Drive and Colab emulators, against pydrive2's own loop.

Starts the Drive emulator (`launcher.sim.drive`) and the Colab runtime emulator
(`launcher.sim.colab`, notebooks in real Jupyter kernels), then measures, in the same process
run:

1. Link opened -> first job log line at home: `launch run jobs/hello.yaml --target colab` (the
   real CLI, a subprocess); the bench "clicks" the printed link (a GET, as a browser would) and
   times until the job's first line ("hi from hello") is on the launcher's stdout. What it
   takes: the session's kernel start, Drive mount, staging, the agent's start, the notebook's
   first copy to Drive (1 s after the agent starts), the mount's sync (`--mount-sync`, the
   emulator's stand-in for Colab's FUSE upload delay) and the launcher's poll.
2. Pull of a session folder of 200 files / 100 MB (random bytes, in 4 sub-folders) from Drive:
   ours (`pull_tree` over `DriveTree`: one listing per folder, ranged GETs on one authorised
   connection, md5 and size checked, fsync + atomic install) against pydrive2's own loop
   (`ListFile` per folder, then `GetContentFile` per file into the same layout), alternated,
   `--runs` times each. Reported as MB/s each and pydrive2's time / ours (goal >= 1).

    .venv/bin/python bench/colab_drive.py [--runs 3] [--append]

`--append` adds the figures, with the date and machine, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.sim.colab import ColabSim  # noqa: E402
from launcher.sim.drive import DriveSim  # noqa: E402
from launcher.sync import pull_tree  # noqa: E402
from launcher.targets.colab.drive import Drive  # noqa: E402
from launcher.targets.colab.endpoint import point_pydrive2_at  # noqa: E402
from launcher.targets.colab.tree import DriveTree  # noqa: E402

FILES, TOTAL_MB, FOLDERS = 200, 100, 4


def link_to_first_line(drive: DriveSim, colab: ColabSim, home: Path, work: Path) -> float:
    project = work / "project"
    if not project.exists():
        for part in ("jobs", "workloads", "images"):
            shutil.copytree(ROOT / part, project / part)
    env = dict(
        os.environ,
        LAUNCH_HOME=str(home),
        LAUNCH_DRIVE_URL=drive.url,
        LAUNCH_COLAB_URL=colab.url,
        LAUNCH_COLAB_CREDENTIALS=str(home / "creds.json"),
        LAUNCH_COLAB_POLL_S="1",
    )
    cmd = [sys.executable, "-m", "launcher", "run", "jobs/hello.yaml", "--profile", "smoke",
           "--target", "colab"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    opened = 0.0
    took = float("nan")
    for line in proc.stdout:
        m = re.search(r"Run all: (\S+)", line)
        if m:
            opened = time.monotonic()
            urllib.request.urlopen(m.group(1), timeout=30).read()
        elif opened and "hi from hello" in line:
            took = time.monotonic() - opened
            break
    proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"launch run failed ({proc.returncode})")
    return took


def make_folder(drive: Drive) -> str:
    size = TOTAL_MB * 1024 * 1024 // FILES
    root = drive.create_folder("bench-session", "root")
    subs = [drive.create_folder(f"part{i}", root) for i in range(FOLDERS)]
    for n in range(FILES):
        drive.upload(
            subs[n % FOLDERS], f"file-{n:03d}.bin", os.urandom(size), "application/octet-stream"
        )
    return root


def ours(drive: Drive, folder: str, dest: Path) -> float:
    t0 = time.perf_counter()
    result = pull_tree(DriveTree(drive, folder), dest)
    took = time.perf_counter() - t0
    assert len(result.copied) == FILES, result
    return took


def pydrive2_loop(gdrive: Any, folder: str, dest: Path) -> float:
    """What a pydrive2 user writes: list each folder, GetContentFile each file."""
    t0 = time.perf_counter()
    pending = [(folder, dest)]
    count = 0
    while pending:
        fid, where = pending.pop()
        where.mkdir(parents=True, exist_ok=True)
        q = f"'{fid}' in parents and trashed = false"
        for f in gdrive.ListFile({"q": q, "maxResults": 1000}).GetList():
            if f["mimeType"] == "application/vnd.google-apps.folder":
                pending.append((f["id"], where / f["title"]))
            else:
                f.GetContentFile(str(where / f["title"]))
                count += 1
    took = time.perf_counter() - t0
    assert count == FILES, count
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mount-sync", type=float, default=1.0, help="the emulated mount's delay")
    ap.add_argument("--append", action="store_true", help="add the figures to bench/RESULTS.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="colab-bench-"))
    home = work / "home"
    home.mkdir()
    try:
        with DriveSim(data_dir=work / "drive") as dsim:
            (home / "creds.json").write_text(json.dumps(dsim.user_credentials()))
            os.environ.update(
                LAUNCH_DRIVE_URL=dsim.url, LAUNCH_COLAB_CREDENTIALS=str(home / "creds.json")
            )
            with ColabSim(
                drive_url=dsim.url, data_dir=work / "colab", sync_seconds=args.mount_sync
            ) as colab:
                firsts = [link_to_first_line(dsim, colab, home, work) for _ in range(args.runs)]
            drive = Drive(home)
            folder = make_folder(drive)
            point_pydrive2_at(dsim.url)
            gdrive = drive._gdrive()  # pyright: ignore[reportPrivateUsage] - the same auth
            mine: list[float] = []
            theirs: list[float] = []
            for i in range(args.runs):
                theirs.append(pydrive2_loop(gdrive, folder, work / f"pydrive2-{i}"))
                mine.append(ours(drive, folder, work / f"ours-{i}"))
                shutil.rmtree(work / f"pydrive2-{i}")
                shutil.rmtree(work / f"ours-{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = statistics.median(firsts)
    m, t = statistics.median(mine), statistics.median(theirs)
    report = "\n".join(
        [
            f"link opened -> first job log line at home: median {first:.1f} s "
            f"({', '.join(f'{x:.1f}' for x in firsts)}; mount sync {args.mount_sync:g} s)",
            f"pull {FILES} files / {TOTAL_MB} MB: ours {m:.2f} s ({TOTAL_MB / m:.0f} MB/s), "
            f"pydrive2 GetContentFile loop {t:.2f} s ({TOTAL_MB / t:.0f} MB/s): "
            f"pydrive2/ours = {t / m:.2f}x (goal >= 1)",
        ]
    )
    print(report)
    if args.append:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d (%H:%M UTC)")
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        )
        entry = f"\n## {stamp} — `bench/colab_drive.py` (--runs {args.runs})\n\n{machine}\n\n"
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(entry + "\n".join(f"- {line}" for line in report.splitlines()) + "\n")


if __name__ == "__main__":
    main()
