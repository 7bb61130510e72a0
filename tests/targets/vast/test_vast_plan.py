"""`VastTarget.plan` and `launch plan --target vast` against the emulator's live offers."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.vast import VastSim
from launcher.spec import load_spec
from launcher.targets.vast.client import VastClient
from launcher.targets.vast.target import VastTarget
from tests.conftest import REPO, launch_cmd
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY, Instances

vast_sim = vast_fixtures.vast_sim
instances = vast_fixtures.instances


def _spec(*overrides: str) -> Any:
    """hello with a registry image: these tests are about offers, not about getting images
    (test_vast_run.py pushes images/hello to a registry)."""
    image = "targets.vast.image=ghcr.io/lab/hello:1"
    return load_spec(REPO / "jobs" / "hello.yaml", profile="smoke", overrides=[image, *overrides])


@pytest.fixture
def target(vast_sim: VastSim, launch_home: Path) -> VastTarget:
    return VastTarget(launch_home, client=VastClient(vast_sim.url, KEY, sleep=lambda _s: None))


def test_plan_lists_live_offers_that_fit_best_first_with_cost(
    target: VastTarget, vast_sim: VastSim, instances: Instances, base_image: str
) -> None:
    spec = _spec("resources.gpu.count=1", "resources.gpu.types=[RTX_4090]", "limits.max_hours=3")
    plan = target.plan(spec)
    assert plan.runnable, plan
    assert {o.gpu for o in plan.options} == {"RTX 4090"}
    assert all(o.gpu_count == 1 for o in plan.options)
    # $/h per unit of reliability, best first; the estimate is $/h x max_hours
    keys = [o.price_per_hour / float(o.details["rel"]) for o in plan.options]  # type: ignore[operator]
    assert keys == sorted(keys)
    for o in plan.options:
        assert o.estimated_cost_usd == pytest.approx(o.price_per_hour * 3, abs=1e-4)  # type: ignore[operator]
    # live: an offer rented now is no longer an option
    first = int(plan.options[0].name)
    instances.create(first, image=base_image)
    again = target.plan(spec)
    assert str(first) not in {o.name for o in again.options}
    assert len(again.options) == len(plan.options) - 1


def test_plan_of_a_job_nothing_fits_names_the_filter_in_the_way(target: VastTarget) -> None:
    spec = _spec(
        "resources.gpu.count=1", "resources.gpu.types=[RTX_4090]", "targets.vast.max_dph=0.05"
    )
    plan = target.plan(spec)
    assert not plan.runnable and not plan.options
    [problem] = plan.problems
    # max_dph excludes every offer; the GPU type only the non-4090 ones
    assert re.search(r"targets\.vast\.max_dph \(dph_total .*\) alone excludes (\d+)", problem)
    assert "resources.gpu.types" in problem


def test_plan_notes_the_cost_cap_and_interruptible_prices(target: VastTarget) -> None:
    spec = _spec(
        "limits.max_hours=100", "limits.max_cost_usd=0.5", "targets.vast.interruptible=true"
    )
    plan = target.plan(spec)
    assert plan.runnable
    assert any("interruptible" in n for n in plan.notes)
    assert any("max_cost_usd=$0.5 buys" in n for n in plan.notes), plan.notes


@pytest.fixture
def cli_env(vast_sim: VastSim, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LAUNCH_VAST_URL", vast_sim.url)
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("LAUNCH_REGISTRY", "127.0.0.1:5999/lab")  # plan pushes nothing
    yield


def _plan(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), "plan", "jobs/hello.yaml", "--target", "vast", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_launch_plan_through_the_cli(project: Path, cli_env: None) -> None:
    proc = _plan(project, "--json", "--set", "resources.gpu.count=1")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["target"] == "vast" and plan["options"] and not plan["problems"]
    assert any("pushed to 127.0.0.1:5999/lab" in n for n in plan["notes"]), plan["notes"]
    assert plan["options"][0]["estimated_cost_usd"] is not None  # hello.yaml sets max_hours
    table = _plan(project, "--set", "resources.gpu.count=1", "--limit", "3")
    assert table.returncode == 0 and "REL" in table.stdout, table.stdout
    assert "… and" in table.stdout or "... and" in table.stdout  # more than --limit fit
    none = _plan(project, "--set", "targets.vast.max_dph=0.01")
    assert none.returncode == 3, none.stdout + none.stderr
    assert "targets.vast.max_dph" in none.stdout + none.stderr
    assert "Traceback" not in none.stderr


def test_plan_says_how_each_input_arrives_and_what_is_missing(
    project: Path, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(project / "no-kaggle-config"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    # the sources' sizes are asked of them: nothing answers on port 9 here, at once
    monkeypatch.setenv("LAUNCH_KAGGLE_URL", "http://127.0.0.1:9")
    inputs = (
        "inputs=[{path: data/nowhere, as: logos}, {kaggle: bob/rwf-mini, as: rwf},"
        " {url: 'http://127.0.0.1:9/w/weights.bin', as: weights}]"
    )
    plan = _plan(project, "--set", inputs, "--json")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    got = json.loads(plan.stdout)
    assert any(
        "input 'logos'" in p and "data/nowhere does not exist" in p for p in got["problems"]
    )
    assert any("Kaggle dataset inputs need Kaggle credentials" in p for p in got["problems"])
    notes = "\n".join(got["notes"])
    assert "rwf <- kaggle:bob/rwf-mini: downloaded by the machine itself" in notes
    assert "weights <- url:http://127.0.0.1:9/w/weights.bin: downloaded by the machine" in notes

    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    inputs = "inputs=[{kaggle: bob/rwf-mini, as: rwf}]"
    assert _plan(project, "--set", inputs).returncode == 0
