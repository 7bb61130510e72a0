"""Short GPU runs of every workload: samples/s, peak GPU memory, and the speed-up of mixed
precision (and XLA for violence) against fp32, measured in the same process run.

Each workload runs as its own program (`python -m <module>`) in a fresh output folder, once per
precision setting; the first setting of a workload (fp32) is the baseline its ratios are against.
Workloads that time fp32 against AMP themselves (svg_quality `--compare-amp`, deepfake
`--amp-compare-steps`) also report that figure from their summary.

    python bench/gpu_workloads.py [--only libcem,violence] [--python violence=/venvs/tf/bin/python]
    python bench/gpu_workloads.py --cpu-check     # the same cases at --smoke sizes, no GPU needed

Each workload needs its packages in the interpreter given for it (default: this one). The table
is printed in Markdown for bench/RESULTS.md. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    workload: str  # folder under workloads/
    label: str  # what differs from the baseline ("fp32", "amp", "amp+xla")
    argv: tuple[str, ...]  # after `python -m`
    smoke: tuple[str, ...]  # the --cpu-check variant


# A few minutes each on one modern GPU; sizes chosen so the steady state dominates start-up.
CASES: tuple[Case, ...] = (
    Case("libcem", "fp32",
         ("libcem.train", "--dataset", "deadleaves", "--tiles", "20000", "--epochs", "3",
          "--batch-size", "256", "--amp", "off", "--device", "cuda"),
         ("libcem.train", "--smoke", "--dataset", "deadleaves", "--amp", "off")),
    Case("libcem", "amp",
         ("libcem.train", "--dataset", "deadleaves", "--tiles", "20000", "--epochs", "3",
          "--batch-size", "256", "--amp", "auto", "--device", "cuda"),
         ("libcem.train", "--smoke", "--dataset", "deadleaves", "--amp", "auto")),
    Case("violence", "fp32",
         ("violence.train", "--synthetic", "64", "--epochs", "4", "--batch-size", "32",
          "--precision", "float32"),
         ("violence.train", "--smoke", "--synthetic", "4", "--precision", "float32")),
    Case("violence", "amp",
         ("violence.train", "--synthetic", "64", "--epochs", "4", "--batch-size", "32",
          "--precision", "mixed_float16"),
         ("violence.train", "--smoke", "--synthetic", "4", "--precision", "mixed_bfloat16")),
    Case("violence", "amp+xla",
         ("violence.train", "--synthetic", "64", "--epochs", "4", "--batch-size", "32",
          "--precision", "mixed_float16", "--xla"),
         ("violence.train", "--smoke", "--synthetic", "4", "--precision", "mixed_bfloat16",
          "--xla")),
    Case("svg_quality", "fp32 vs amp (in-run)",
         ("svg_quality.train", "--synthetic", "200", "--per-image", "16", "--backbone", "random",
          "--epochs", "10", "--compare-amp", "--device", "cuda"),
         ("svg_quality.train", "--smoke", "--compare-amp")),
    Case("deepfake", "fp32 vs amp (in-run)",
         ("deepfake", "train", "--synthetic", "24", "--model", "ensemble", "--epochs", "2",
          "--amp-compare-steps", "30", "--bench-iters", "100", "--device", "cuda"),
         ("deepfake", "train", "--smoke", "--synthetic", "6", "--amp-compare-steps", "3")),
    Case("handprep", "cpu workers",
         ("handprep", "--smoke", "--workers", str(max(1, (os.cpu_count() or 2) - 1))),
         ("handprep", "--smoke", "--workers", "2")),
)  # fmt: skip


def kit_folder() -> Path:
    """A folder holding a copy of launcher/launchkit.py alone (on a lent machine the repo may
    not be installed; putting launcher/ itself on the path would expose its modules)."""
    import shutil

    folder = Path(tempfile.gettempdir()) / "launch-kit-bench"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "launcher" / "launchkit.py", folder / "launchkit.py")
    return folder


def _first(summary: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if summary.get(key) is not None:
            return summary[key]
    return None


def run_case(case: Case, python: str, smoke: bool, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{case.workload}-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_")}
        env.update(
            # the workload's package, and launchkit (a bundle carries it; here: launcher/'s
            # own copy, alone in the path after the workload)
            PYTHONPATH=os.pathsep.join(
                [str(REPO / "workloads" / case.workload), str(kit_folder())]
            ),
            LAUNCH_OUTPUT_DIR=f"{tmp}/outputs",
            LAUNCH_CHECKPOINT_DIR=f"{tmp}/checkpoints",
            HF_HUB_OFFLINE="1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        argv = case.smoke if smoke else case.argv
        t0 = time.monotonic()
        proc = subprocess.run(
            [python, "-m", *argv], env=env, cwd=tmp, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        found = sorted(Path(tmp, "outputs").rglob("summary.json"), key=lambda f: len(f.parts))
        path = found[0] if found else None
        if proc.returncode != 0 or path is None:
            tail = (proc.stderr or proc.stdout)[-1500:]
            return {"ok": False, "seconds": seconds, "error": f"exit {proc.returncode}: {tail}"}
        s = json.loads(path.read_text())
    latency = s.get("latency") or {}
    return {
        "ok": True,
        "seconds": seconds,
        "device": _first(s, "device_name", "device") or "?",
        "rate": _first(s, "steady_samples_per_s", "samples_per_s", "frames_per_s"),
        "unit": "frames/s" if "frames_per_s" in s else "samples/s",
        "peak_mb": _first(s, "peak_gpu_memory_mb", "worker_peak_rss_mb"),
        "in_run": latency.get("amp_vs_fp32_train_samples_per_s") or s.get("train_speed"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated workloads")
    p.add_argument("--python", action="append", default=[], metavar="WORKLOAD=PYTHON")
    p.add_argument("--cpu-check", action="store_true", help="smoke sizes: check the script")
    p.add_argument("--timeout", type=float, default=900)
    a = p.parse_args()
    pythons = dict(item.split("=", 1) for item in a.python)
    only = {w for w in a.only.split(",") if w}
    rows: list[tuple[Case, dict[str, Any]]] = []
    for case in CASES:
        if only and case.workload not in only:
            continue
        python = pythons.get(case.workload, sys.executable)
        print(f"running {case.workload} [{case.label}] ...", file=sys.stderr, flush=True)
        rows.append((case, run_case(case, python, a.cpu_check, a.timeout)))
    mode = "CPU check (smoke sizes)" if a.cpu_check else "GPU"
    print(f"\n{time.strftime('%Y-%m-%d')} · {mode}\n")
    print("| workload | setting | device | rate | vs first | peak MB | wall s | in-run fp32/AMP |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base: dict[str, float] = {}
    failed = 0
    for case, r in rows:
        if not r["ok"]:
            failed += 1
            print(f"| {case.workload} | {case.label} | failed | - | - | - | {r['seconds']:.0f} | "
                  f"{r['error'].splitlines()[-1] if r['error'] else ''} |")  # fmt: skip
            continue
        rate = r["rate"]
        if isinstance(rate, int | float) and case.workload not in base:
            base[case.workload] = float(rate)
        known = isinstance(rate, int | float) and base.get(case.workload)
        ratio = f"{float(rate) / base[case.workload]:.2f}x" if known else "-"
        in_run = json.dumps(r["in_run"], separators=(",", ":")) if r["in_run"] else ""
        print(f"| {case.workload} | {case.label} | {r['device']} | {rate} {r['unit']} | {ratio} | "
              f"{r['peak_mb'] if r['peak_mb'] is not None else '-'} | {r['seconds']:.0f} | "
              f"{in_run} |")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
