"""`launch plan` on the local target, through the real CLI: what it shows, what it refuses, and
that it starts nothing (no run is recorded, no container or run folder appears)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import launch_cmd


def plan(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), "plan", *args], cwd=project, capture_output=True, text=True, timeout=60
    )


def test_plan_shows_this_machine_and_starts_nothing(project: Path, launch_home: Path) -> None:
    proc = plan(project, "jobs/hello.yaml", "--set", "targets.local.runtime=process", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == "local" and result["problems"] == []
    [option] = result["options"]
    assert option["name"] == "this machine" and option["price_per_hour"] == 0
    assert option["details"]["runtime"] == "process"
    assert not (project / "runs").exists()
    ls = subprocess.run(
        [*launch_cmd(), "ls", "--json"], cwd=project, capture_output=True, text=True
    )
    assert json.loads(ls.stdout) == []
    table = plan(project, "jobs/hello.yaml", "--set", "targets.local.runtime=process")
    assert table.returncode == 0 and "this machine" in table.stdout and "process" in table.stdout


def test_a_job_this_machine_cannot_run_exits_3_with_the_reason(project: Path) -> None:
    proc = plan(project, "jobs/hello.yaml", "--set", "resources.gpu.count=8",
                "--set", "targets.local.runtime=process")  # fmt: skip
    assert proc.returncode == 3
    assert "problem:" in proc.stdout and "8 GPU(s)" in proc.stdout
    assert "cannot run on local" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_reports_spec_problems_and_unknown_targets_like_run(project: Path) -> None:
    bad = plan(project, "jobs/hello.yaml", "--set", "resorces.gpu.count=1")
    assert bad.returncode == 2 and "resources" in bad.stderr
    unknown = plan(project, "jobs/hello.yaml", "--target", "vasst")
    assert unknown.returncode == 3 and "did you mean 'vast'" in unknown.stderr


def test_plan_all_compares_targets_and_names_what_each_one_lacks(
    project: Path, tmp_path: Path
) -> None:
    """With no platform credentials, local still plans and every other target says what it is
    missing, instead of one missing account hiding the rest."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "KAGGLE_"))}
    env["HOME"] = str(tmp_path / "home")  # no ~/.kaggle/kaggle.json, no vastai key file
    proc = subprocess.run(
        [*launch_cmd(), "plan", "jobs/hello.yaml", "--target", "all", "--json",
         "--set", "targets.local.runtime=process"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plans = {p["target"]: p for p in json.loads(proc.stdout)}
    assert plans["local"]["problems"] == [] and plans["local"]["options"]
    assert "vast" in plans and "API key" in plans["vast"]["problems"][0]
    assert all(plans[t]["problems"] and not plans[t]["options"] for t in plans if t != "local")
