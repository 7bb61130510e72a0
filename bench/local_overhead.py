"""Overhead of `launch run` on the local target against running the same job by hand.

Docker runtime: `launch run jobs/hello.yaml --profile smoke --set targets.local.runtime=docker`
against `docker run --rm -v <workloads/hello>:/w:ro -w /w <tag> python3 -m hello.train --epochs 3`
(the image launch built, the same command). A second docker baseline adds `--network host`,
which is what launch uses, so the network set-up cost can be told apart from the launcher's.
Process runtime: the same `launch run` with runtime=process against `python3 -m hello.train
--epochs 3` run directly in the workload folder.

Everything runs in a temp copy of jobs/, workloads/ and images/ with a throwaway LAUNCH_HOME, so
runs/ folders and the run store land there. After one unmeasured warm-up of each command (it
builds the image and the process runtime's virtualenv), the commands run interleaved, N rounds,
and each `launch run` is broken down from `launch status last --json` (its phases) and its
pulled job.log (when the agent came up, when the workload started and exited).

Usage: .venv/bin/python bench/local_overhead.py [--runs 5] [--base-image launch-base:local]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LAUNCH = ROOT / ".venv" / "bin" / "launch"
PYTHON = ROOT / ".venv" / "bin" / "python"
JOB = "jobs/hello.yaml"
WORKLOAD = "workloads/hello"
KIT = ROOT / "launcher" / "launchkit.py"  # every bundle carries it; the baselines get a copy
TRAIN = ["python3", "-m", "hello.train", "--epochs", "3"]
GOAL_OVERHEAD_S = 0.25  # issue 9: under +0.25 s over a raw `docker run` (+0.46 s before)
QUIET: dict = {"capture_output": True, "text": True}


def die(message: str) -> None:
    print(f"local_overhead.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # nearest rank, ceil
    return ordered[int(rank) - 1]


def ts(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (with Z or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_prerequisites(base_image: str) -> None:
    if not LAUNCH.exists():
        die(f"{LAUNCH} is missing: install the project into .venv (pip install -e '.[dev]')")
    if shutil.which("docker") is None:
        die("no docker CLI on PATH")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], **QUIET)
    if info.returncode != 0:
        die(f"no docker engine answers (start one: scripts/ensure-docker.sh):\n{info.stderr}")
    image = subprocess.run(["docker", "image", "inspect", base_image], **QUIET)
    if image.returncode != 0:
        die(f"base image {base_image} not found (build it: scripts/build-base-image.sh)")
    if shutil.which("python3") is None:
        die("no python3 on PATH (the process baseline runs it)")


class Bench:
    def __init__(self, tmp: Path, base_image: str) -> None:
        self.tmp = tmp
        for name in ("jobs", "workloads", "images"):
            shutil.copytree(
                ROOT / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        self.workload = tmp / WORKLOAD
        self.kit = tmp / "kit" / "launchkit.py"
        self.kit.parent.mkdir()
        shutil.copyfile(KIT, self.kit)
        self.env = dict(os.environ, LAUNCH_HOME=str(tmp / "home"), LAUNCH_BASE_IMAGE=base_image)
        self.tag = ""

    # ---- commands -----------------------------------------------------------------------------

    def launch(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(LAUNCH), *args], cwd=self.tmp, env=self.env, timeout=timeout, **QUIET
        )

    def launch_run_cmd(self, runtime: str) -> list[str]:
        return [
            str(LAUNCH),
            "run",
            JOB,
            "--profile",
            "smoke",
            "--set",
            f"targets.local.runtime={runtime}",
        ]

    def docker_cmd(self, host_network: bool) -> list[str]:
        net = ["--network", "host"] if host_network else []
        return [
            "docker",
            "run",
            "--rm",
            *net,
            "-v",
            f"{self.workload}:/w:ro",  # launch mounts its bundle read-only too
            "-v",
            f"{self.kit}:/kit/launchkit.py:ro",  # the job's helper, as the bundle carries it
            "-w",
            "/w",
            "-e",
            "PYTHONPATH=/kit",
            "-e",
            "LAUNCH_OUTPUT_DIR=/tmp/out",
            "-e",
            "LAUNCH_CHECKPOINT_DIR=/tmp/ckpt",
            self.tag,
            *TRAIN,
        ]

    def timed(
        self, cmd: list[str], cwd: Path, env: dict[str, str]
    ) -> tuple[float, float, float, subprocess.CompletedProcess]:
        """(seconds, wall-clock start, wall-clock end, completed process)."""
        t_wall = time.time()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, timeout=600, **QUIET)
        seconds = time.perf_counter() - start
        return seconds, t_wall, time.time(), proc

    # ---- the measured commands ------------------------------------------------------------------

    def baseline_docker(self, host_network: bool) -> float:
        seconds, _, _, proc = self.timed(self.docker_cmd(host_network), self.tmp, self.env)
        expect_trained(proc, "docker run baseline")
        return seconds

    def baseline_process(self) -> float:
        out = Path(tempfile.mkdtemp(dir=self.tmp, prefix="proc-out-"))
        env = dict(
            self.env,
            LAUNCH_OUTPUT_DIR=str(out / "outputs"),
            LAUNCH_CHECKPOINT_DIR=str(out / "checkpoints"),
            # launch's job compiles its fresh bundle each run; so does the baseline
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPATH=str(self.kit.parent),
        )
        try:
            seconds, _, _, proc = self.timed(TRAIN, self.workload, env)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        expect_trained(proc, "python3 baseline")
        return seconds

    def launch_run(self, runtime: str) -> dict[str, float]:
        seconds, t0, t1, proc = self.timed(self.launch_run_cmd(runtime), self.tmp, self.env)
        if proc.returncode != 0:
            die(
                f"`launch run` ({runtime}) exited {proc.returncode} "
                f"(a launcher bug? nothing here changes launcher code):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        status = self.launch("status", "last", "--json")
        if status.returncode != 0:
            die(f"`launch status last --json` exited {status.returncode}:\n{status.stderr}")
        record = json.loads(status.stdout)
        if record.get("status") != "succeeded":
            die(f"the run ended {record.get('status')}: {record.get('message')}")
        return breakdown(record, seconds, t0, t1)

    # ---- set-up ---------------------------------------------------------------------------------

    def warm_up(self) -> None:
        proc = self.launch(*self.launch_run_cmd("docker")[1:])
        if proc.returncode != 0:
            die(
                f"warm-up `launch run` (docker) exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        built = self.launch("image", "build", "hello")
        m = re.search(r"up to date: (\S+)", built.stdout)
        if built.returncode != 0 or not m:
            die(f"`launch image build hello` did not say `up to date: TAG`:\n{built.stdout}")
        self.tag = m.group(1)
        proc = self.launch(*self.launch_run_cmd("process")[1:])
        if proc.returncode != 0:
            die(f"warm-up `launch run` (process) exited {proc.returncode}:\n{proc.stderr}")
        self.baseline_docker(False)
        self.baseline_docker(True)
        self.baseline_process()

    def import_profile(self) -> dict[str, float]:
        """One extra `launch run` (docker) under -X importtime: self ms summed per top-level
        package (a package's own modules only; its dependencies count under their names)."""
        cmd = [str(PYTHON), "-X", "importtime", str(LAUNCH), *self.launch_run_cmd("docker")[1:]]
        proc = subprocess.run(cmd, cwd=self.tmp, env=self.env, timeout=600, **QUIET)
        if proc.returncode != 0:
            die(f"`launch run` under -X importtime exited {proc.returncode}:\n{proc.stderr}")
        per_package: dict[str, float] = {}
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _, name = line.removeprefix("import time:").split("|")
            top = name.strip().split(".")[0]
            per_package[top] = per_package.get(top, 0.0) + int(self_us) / 1000
        total = sum(per_package.values())
        top = dict(sorted(per_package.items(), key=lambda kv: kv[1], reverse=True)[:10])
        return {"all imports": total, **top}


def expect_trained(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0 or "done: 3 epochs" not in proc.stdout:
        die(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def breakdown(record: dict, seconds: float, t0: float, t1: float) -> dict[str, float]:
    """Phase seconds from the record, and where the time around and inside them went."""
    row: dict[str, float] = {"wall": seconds}
    for phase in record.get("phases", []):
        row[phase["status"]] = row.get(phase["status"], 0.0) + float(phase["seconds"])
    events = {e["status"]: ts(e["at"]) for e in record.get("events", [])}
    if "pending" in events and record["status"] in events:
        row["before pending (cli start, spec load)"] = events["pending"] - t0
        row["after end (exit)"] = t1 - events[record["status"]]
    log = Path(record["output_dir"]) / "logs" / "job.log"
    agent: list[tuple[float, str]] = []
    if log.is_file():
        for line in log.read_text().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] == "agent":
                agent.append((ts(parts[0]), parts[2]))
    started = next((t for t, text in agent if text.startswith("started pid")), None)
    exited = next((t for t, text in agent if text.startswith("workload exited")), None)
    if agent and started and exited and "starting" in events and "running" in events:
        row["  submit -> agent up"] = agent[0][0] - events["starting"]
        row["  agent up -> workload start"] = started - agent[0][0]
        row["  workload (python + 3 epochs)"] = exited - started
        row["  workload exit -> seen (poll)"] = events["running"] - exited
    return row


def median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    return {k: statistics.median([r[k] for r in rows if k in r]) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--base-image", default="launch-base:local", help="LAUNCH_BASE_IMAGE")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.runs < 1:
        die("--runs must be at least 1")
    check_prerequisites(args.base_image)

    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    try:
        bench = Bench(tmp, args.base_image)
        print("warming up (builds the image if needed, creates the process venv) ...", flush=True)
        bench.warm_up()

        times: dict[str, list[float]] = {
            "docker run (baseline)": [],
            "docker run --network host": [],
            "launch run (docker)": [],
            "python3 (baseline)": [],
            "launch run (process)": [],
        }
        rows: dict[str, list[dict[str, float]]] = {"docker": [], "process": []}
        steps = list(times)
        for i in range(args.runs):
            print(f"round {i + 1}/{args.runs}", flush=True)
            for step in steps[i % len(steps) :] + steps[: i % len(steps)]:
                if step == "docker run (baseline)":
                    times[step].append(bench.baseline_docker(False))
                elif step == "docker run --network host":
                    times[step].append(bench.baseline_docker(True))
                elif step == "python3 (baseline)":
                    times[step].append(bench.baseline_process())
                else:
                    runtime = "docker" if "docker" in step else "process"
                    row = bench.launch_run(runtime)
                    rows[runtime].append(row)
                    times[step].append(row["wall"])
        imports = bench.import_profile()
        tag = bench.tag
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"# local_overhead.py  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
    print(f"# image {tag}, base {args.base_image}; {args.runs} interleaved rounds after warm-up")
    print()
    print(f"{'command':<28} {'median s':>9} {'p90 s':>7} {'min s':>7}")
    med: dict[str, float] = {}
    for label, values in times.items():
        med[label] = statistics.median(values)
        print(f"{label:<28} {med[label]:>9.3f} {percentile(values, 90):>7.3f} {min(values):>7.3f}")
    print()
    pairs = [
        ("docker", "launch run (docker)", "docker run (baseline)"),
        ("docker", "launch run (docker)", "docker run --network host"),
        ("process", "launch run (process)", "python3 (baseline)"),
    ]
    for _, b, a in pairs:
        print(f"{b} vs {a}: overhead {med[b] - med[a]:+.3f} s, ratio {med[b] / med[a]:.2f}x")
    print()
    for runtime in ("docker", "process"):
        print(f"launch run ({runtime}), median seconds per phase / segment:")
        for key, value in median_rows(rows[runtime]).items():
            print(f"  {key:<40} {value:>7.3f}")
        print()
    print("imports of one `launch run` (docker), python -X importtime, self ms per package:")
    print("  " + ", ".join(f"{k} {v:.0f}" for k, v in imports.items()))
    print()
    overhead_docker = med["launch run (docker)"] - med["docker run (baseline)"]
    overhead_process = med["launch run (process)"] - med["python3 (baseline)"]
    print("goals:")
    for text, value in (
        ("docker: launch run - docker run", overhead_docker),
        ("process: launch run - python3", overhead_process),
    ):
        met = value < GOAL_OVERHEAD_S
        print(
            f"  [{'met' if met else 'NOT MET'}] {text} < {GOAL_OVERHEAD_S:.0f} s ({value:.3f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
