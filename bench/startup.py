"""Start-up time of `launch --help` against `python -c pass` and `kaggle --help`.

All three commands run interleaved in the same process run, N times each (after one unmeasured
warm-up round), and `launch` is reported as a ratio of each baseline. The kaggle CLI lives in its
own venv (bench/.venv-kaggle, created on first use) so it never enters the project's venv; it
gets dummy credentials and a throwaway config dir, since it authenticates at import time.

A second part runs `launch --help` under `python -X importtime` and reports the import time of
the launcher's own modules and whether pydantic, docker or rich were imported (they must not be).

Usage: .venv/bin/python bench/startup.py [--runs 20]
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
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
KAGGLE_VENV = BENCH / ".venv-kaggle"
KAGGLE_PINS = ["kaggle==2.2.5", "six"]  # kaggle 2.2.5 imports six without declaring it

GOAL_MEDIAN_MS = 250.0
HEAVY = ("pydantic", "docker", "rich")


def die(message: str) -> None:
    print(f"startup.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def project_python() -> Path:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        die(f"no project venv at {ROOT / '.venv'} (run scripts/setup-venv.sh)")
    return python


def launch_exe() -> Path:
    exe = ROOT / ".venv" / "bin" / "launch"
    if not exe.exists():
        die(f"{exe} is missing: install the project into .venv (pip install -e .)")
    return exe


def base_python() -> str:
    """The interpreter the kaggle venv is made from: the base one behind any active venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_kaggle() -> Path:
    kaggle = KAGGLE_VENV / "bin" / "kaggle"
    python = KAGGLE_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {KAGGLE_VENV.relative_to(ROOT)} ...", flush=True)
        r = subprocess.run([base_python(), "-m", "venv", str(KAGGLE_VENV)])
        if r.returncode != 0:
            die(f"could not create the kaggle venv at {KAGGLE_VENV}")
    check = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, six; print(m.version('kaggle'))"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0 or check.stdout.strip() != "2.2.5" or not kaggle.exists():
        print(f"installing {' '.join(KAGGLE_PINS)} into the kaggle venv ...", flush=True)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", *KAGGLE_PINS])
        if r.returncode != 0 or not kaggle.exists():
            die(f"could not install {' '.join(KAGGLE_PINS)} into {KAGGLE_VENV}")
    return kaggle


def kaggle_env(config_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAGGLE_USERNAME="bench",
        KAGGLE_KEY="0" * 32,
        KAGGLE_CONFIG_DIR=config_dir,
    )
    return env


def time_once(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    return (time.perf_counter() - start) * 1000.0, proc


def import_profile(python: Path, launch: Path) -> dict[str, object]:
    """Run `launch --help` under -X importtime; sum the launcher's modules, list heavy ones."""
    proc = subprocess.run(
        [str(python), "-X", "importtime", str(launch), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        die(f"`launch --help` under -X importtime exited {proc.returncode}:\n{proc.stderr}")
    rows: list[tuple[str, int, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        rows.append((name.strip(), int(self_us), int(cumulative_us)))
    modules = {name for name, _, _ in rows}
    launcher_self = sum(s for name, s, _ in rows if name.split(".")[0] == "launcher")
    launcher_cum = next((c for name, _, c in rows if name == "launcher.cli"), 0)
    total_self = sum(s for _, s, _ in rows)
    heavy = sorted(
        {name.split(".")[0] for name in modules if name.split(".")[0] in HEAVY},
    )
    launcher_modules = sorted(name for name in modules if name.split(".")[0] == "launcher")
    slowest = sorted(rows, key=lambda r: r[1], reverse=True)[:8]
    return {
        "launcher_self_ms": launcher_self / 1000,
        "launcher_cli_cumulative_ms": launcher_cum / 1000,
        "total_ms": total_self / 1000,
        "modules": len(modules),
        "heavy": heavy,
        "launcher_modules": launcher_modules,
        "slowest": slowest,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each command")
    args = parser.parse_args()
    if args.runs < 1:
        die("--runs must be at least 1")

    python = project_python()
    launch = launch_exe()
    kaggle = ensure_kaggle()

    home_kaggle = Path.home() / ".kaggle"
    home_kaggle_before = home_kaggle.exists() and sorted(os.listdir(home_kaggle))
    config_dir = tempfile.mkdtemp(prefix="bench-kaggle-")
    try:
        env = dict(os.environ)
        kenv = kaggle_env(config_dir)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "launch --help": ([str(launch), "--help"], env),
            "python -c pass": ([str(python), "-c", "pass"], env),
            "kaggle --help": ([str(kaggle), "--help"], kenv),
        }

        # Prerequisite check and warm-up round (not measured): every command must succeed, and
        # the two --help commands must actually print help.
        for label, (cmd, cenv) in commands.items():
            _, proc = time_once(cmd, cenv)
            if proc.returncode != 0:
                die(f"`{label}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
            if label.endswith("--help") and "usage" not in proc.stdout.lower():
                die(f"`{label}` printed no help:\n{proc.stdout}\n{proc.stderr}")

        times: dict[str, list[float]] = {label: [] for label in commands}
        labels = list(commands)
        for i in range(args.runs):
            # rotate the order each round so no command always runs first (cache effects)
            for label in labels[i % 3 :] + labels[: i % 3]:
                cmd, cenv = commands[label]
                ms, proc = time_once(cmd, cenv)
                if proc.returncode != 0:
                    die(f"`{label}` exited {proc.returncode} in run {i + 1}:\n{proc.stderr}")
                times[label].append(ms)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)

    home_kaggle_after = home_kaggle.exists() and sorted(os.listdir(home_kaggle))
    if home_kaggle_after != home_kaggle_before:
        print(f"warning: kaggle changed {home_kaggle} despite KAGGLE_CONFIG_DIR", file=sys.stderr)

    prof = import_profile(python, launch)

    print(f"# startup.py  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
    print(
        f"# {platform.node()}  {os.cpu_count()} cpus  Python {platform.python_version()}  "
        f"runs={args.runs} each, interleaved, after 1 warm-up round"
    )
    print()
    print(f"{'command':<16} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    med: dict[str, float] = {}
    for label, values in times.items():
        med[label] = statistics.median(values)
        print(
            f"{label:<16} {med[label]:>10.1f} {percentile(values, 90):>8.1f} {min(values):>8.1f}"
        )
    print()
    launch_med = med["launch --help"]
    print(f"launch --help / python -c pass: {launch_med / med['python -c pass']:.2f}x")
    print(f"launch --help / kaggle --help:  {launch_med / med['kaggle --help']:.2f}x")
    print()
    print("import profile of `launch --help` (python -X importtime):")
    print(f"  launcher.* modules, self time:   {prof['launcher_self_ms']:.1f} ms")
    print(f"  launcher.cli cumulative:         {prof['launcher_cli_cumulative_ms']:.1f} ms")
    print(
        f"  all imports, self time summed:   {prof['total_ms']:.1f} ms  ({prof['modules']} mods)"
    )
    print(f"  launcher modules imported:       {', '.join(prof['launcher_modules'])}")
    heavy = prof["heavy"]
    print(f"  heavy packages imported:         {', '.join(heavy) if heavy else 'none'}")
    print("  slowest imports (self ms):       ", end="")
    print(", ".join(f"{n} {s / 1000:.1f}" for n, s, _ in prof["slowest"]))
    print()

    goals = [
        (f"launch --help median < {GOAL_MEDIAN_MS:.0f} ms", launch_med < GOAL_MEDIAN_MS),
        ("launch --help faster than kaggle --help", launch_med < med["kaggle --help"]),
        ("launch --help imports no pydantic/docker/rich", not heavy),
    ]
    print("goals:")
    for text, met in goals:
        print(f"  [{'met' if met else 'NOT MET'}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
