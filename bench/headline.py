"""The headline offline: `launch run jobs/violence.yaml --target vast --profile smoke` against a
stack of emulators (`launch sim up --with-registry --runner process`, private ports and state),
from its own image, cold (a registry that has nothing yet: the first run builds if needed and
pushes) and warm (the image already in the registry), interleaved with the baseline: a raw
`docker run` of the same image and command, the workload mounted.

    .venv/bin/python bench/headline.py [--runs 3] [--job violence] [--append]

Needs a docker engine and the local base (scripts/build-base-image.sh; LAUNCH_BASE_IMAGE).
Ratio = baseline seconds / ours (1.00x or more: as fast as raw docker).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from vast_sync import bench_args, die, machine, report  # noqa: E402

LAUNCH = [sys.executable, "-m", "launcher"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(state: Path) -> dict[str, str]:
    env = dict(os.environ, LAUNCH_SIM_STATE=str(state))
    for service in ("vast", "kaggle", "drive", "colab", "registry"):
        env[f"LAUNCH_SIM_{service.upper()}_PORT"] = str(free_port())
    return env


def exports(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([*LAUNCH, "sim", "env"], env=env, capture_output=True, text=True)
    pairs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        for word in line.removeprefix("export ").split():
            key, _, value = word.partition("=")
            pairs[key] = value.strip("'")
    return pairs


def ours(project: Path, env: dict[str, str], job: str) -> tuple[float, dict[str, float]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [*LAUNCH, "run", f"jobs/{job}.yaml", "--target", "vast", "--profile", "smoke", "--json"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    took = time.monotonic() - t0
    if proc.returncode != 0:
        die(f"launch run failed:\n{proc.stderr[-3000:]}")
    rec = json.loads(proc.stdout)
    return took, {p["status"]: p["seconds"] for p in rec["phases"]}


def baseline(image: str, project: Path, job: str, command: str) -> float:
    workload = project / "workloads" / job
    t0 = time.monotonic()
    proc = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{workload}:/w", "-w", "/w",
         "-v", f"{ROOT / 'launcher' / 'launchkit.py'}:/kit/launchkit.py:ro",
         "-e", "PYTHONPATH=/kit", "-e", "LAUNCH_OUTPUT_DIR=/tmp/o",
         "-e", "LAUNCH_CHECKPOINT_DIR=/tmp/c", image, "sh", "-c", command],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        die(f"docker run failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def main() -> int:
    parser = bench_args(__doc__)
    parser.add_argument("--job", default="violence")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from launcher.images import ensure_image, requirements_for
    from launcher.spec import load_spec
    from launcher.targets.local.docker_client import DockerClient

    work = Path(tempfile.mkdtemp(prefix="bench-headline-"))
    project = work / "project"
    for part in ("jobs", "workloads", "images"):
        shutil.copytree(ROOT / part, project / part)
    env = stack_env(work / "sim")
    env.setdefault("LAUNCH_BASE_IMAGE", args.base_image)
    env["LAUNCH_HOME"] = str(work / "home")
    up = subprocess.run(
        [*LAUNCH, "sim", "up", "--with-registry", "--runner", "process"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if up.returncode != 0:
        die(f"launch sim up failed:\n{up.stderr}")
    try:
        env.update(exports(env))
        spec = load_spec(project / "jobs" / f"{args.job}.yaml", profile="smoke")
        assert spec.image is not None
        os.environ["LAUNCH_BASE_IMAGE"] = env["LAUNCH_BASE_IMAGE"]
        image = ensure_image(
            DockerClient(), project, spec.image, requirements=requirements_for(spec, None)
        ).tag  # built once here, so "cold" is the push and the first pull, not the build
        cold, cold_phases = ours(project, env, args.job)
        warm: list[float] = []
        raw: list[float] = []
        setup: list[float] = []
        for _ in range(args.runs):
            raw.append(baseline(image, project, args.job, spec.run))
            took, phases = ours(project, env, args.job)
            warm.append(took)
            setup.append(sum(phases.get(s, 0.0) for s in ("preparing", "provisioning",
                                                           "uploading", "starting")))  # fmt: skip
    finally:
        subprocess.run([*LAUNCH, "sim", "down"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    med_raw, med_warm = statistics.median(raw), statistics.median(warm)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report(
        [
            f"## {now} — the headline offline (`bench/headline.py --job {args.job} --runs "
            f"{args.runs}`)",
            "",
            f"Machine: {machine()}. Stack: `launch sim up --with-registry --runner process`;",
            f"image {image} (built before timing).",
            "",
            "| case | ours | baseline (raw docker run) | ratio |",
            "| --- | --- | --- | --- |",
            f"| cold registry (push + first pull) | {cold:.1f} s (preparing "
            f"{cold_phases.get('preparing', 0):.1f} s) | {med_raw:.1f} s "
            f"| {med_raw / cold:.2f}x |",
            f"| warm registry, median of {args.runs} | {med_warm:.1f} s (setup "
            f"{statistics.median(setup):.1f} s) | {med_raw:.1f} s | {med_raw / med_warm:.2f}x |",
            "",
        ],
        args.append,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
