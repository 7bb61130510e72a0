"""`launch run --target vast` end to end against the Vast emulator, through the real CLI.

The emulator runs in this process (`VastSim`, docker machines: each instance is a real container
of the requested image with a real sshd); the launcher is a real subprocess pointed at it with
`LAUNCH_VAST_URL`. Every test ends with no instance left in the emulator and no container.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.sim.vast import VastSim
from launcher.targets.vast.options import VastOptions
from tests.conftest import launch_cmd
from tests.registry import catalog, registry
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY

vast_sim = vast_fixtures.vast_sim
__all__ = ["registry"]  # the fixture, imported for pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def vast(vast_sim: VastSim, base_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[VastSim]:
    monkeypatch.setenv("LAUNCH_VAST_URL", vast_sim.url)
    monkeypatch.setenv("VAST_API_KEY", KEY)
    yield vast_sim
    left = vast_sim.instances()
    for row in left:  # never leak into the next test, but fail this one
        vast_fixtures.api(vast_sim, "DELETE", f"/api/v0/instances/{row['id']}/", {})
    assert not left, f"instances left behind: {[r['id'] for r in left]}"
    assert not _sim_containers(vast_sim)


def _sim_containers(sim: VastSim) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=launch.sim.owner={sim.owner}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def launch(project: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), *args], cwd=project, capture_output=True, text=True, timeout=timeout
    )


def record(project: Path, run: str = "last") -> dict:  # type: ignore[type-arg]
    proc = launch(project, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def status_of(project: Path) -> str | None:
    proc = launch(project, "status", "last", "--json")
    return json.loads(proc.stdout)["status"] if proc.returncode == 0 else None


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_args(base_image: str, *extra: str) -> list[str]:
    return [
        "run",
        "jobs/hello.yaml",
        "--target",
        "vast",
        "--profile",
        "smoke",
        "--set",
        f"targets.vast.image={base_image}",
        *extra,
    ]


def test_hello_runs_end_to_end_on_the_emulator(
    project: Path, vast: VastSim, base_image: str
) -> None:
    proc = launch(project, *run_args(base_image))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rec = record(project)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0, rec
    phases = [p["status"] for p in rec["phases"]]
    for phase in ("provisioning", "uploading", "running", "pulling"):
        assert phase in phases, phases
    # the real $/h of the rented offer, and what the run cost at it
    assert float(rec["price_per_hour"]) > 0
    assert rec["cost_usd"] is not None and float(rec["cost_usd"]) > 0
    out = Path(rec["output_dir"])
    metrics = (out / "outputs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2, 3]
    assert any((out / "checkpoints").iterdir())
    assert "epoch 3/3" in (out / "logs" / "job.log").read_text()
    assert "epoch 1/3" in proc.stdout  # streamed while it ran
    # the launcher's key pair: created once, private
    key = Path(os.environ["LAUNCH_HOME"]) / "keys" / "vast_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600


def test_a_create_whose_answer_is_lost_leaves_no_twin(
    project: Path, vast: VastSim, base_image: str
) -> None:
    vast.fail_next_create(mode="lost", status=500)
    proc = launch(project, *run_args(base_image))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert record(project)["status"] == "succeeded"
    # the fixture checks that no instance (the lost one included) is left


def test_max_cost_usd_stops_the_run_with_a_checkpoint_before_the_cap(
    project: Path, vast: VastSim, base_image: str
) -> None:
    from launcher.spec import load_spec
    from launcher.targets.vast.client import VastClient
    from launcher.targets.vast.offers import offer_query, rank

    spec = load_spec(project / "jobs" / "hello.yaml", profile="smoke")
    offers = VastClient(vast.url, KEY).search_offers(offer_query(spec, VastOptions()))
    best = rank(offers, VastOptions())[0]
    price = float(best["dph_total"])
    # the stop comes a grace period (2 s) plus a minute before the cap: ~25 s after the create
    cap = round(price * (2 + 60 + 25) / 3600, 6)
    proc = launch(
        project,
        *run_args(
            base_image,
            "--set",
            "run=python3 -m hello.train --epochs 200 --epoch-seconds 0.5",
            "--set",
            "limits.grace_seconds=2",
            "--set",
            f"limits.max_cost_usd={cap}",
        ),
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "max_cost_usd" in proc.stderr + proc.stdout
    rec = record(project)
    assert rec["status"] == "failed" and rec["failure_reason"] == "cost_limit", rec
    assert 0 < float(rec["cost_usd"]) <= cap, (rec["cost_usd"], cap)
    out = Path(rec["output_dir"])
    summary = json.loads((out / "outputs" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["epochs_done"] < 200, summary
    assert (out / "checkpoints" / f"ckpt-epoch-{summary['epochs_done']:04d}.json").is_file()


def test_an_image_folder_is_pushed_once_to_the_registry_and_the_instance_pulls_it(
    project: Path, vast: VastSim, docker_env: str, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The headline command's shape: `image: hello` is a folder here. Without a registry the
    run is refused before anything is rented; with LAUNCH_REGISTRY the image is built, pushed
    under its content tag, and the instance pulls it from there (the emulator pulls images
    named with a registry host, as Vast does, so a missing push fails the boot)."""
    smoke = ("run", "jobs/hello.yaml", "--target", "vast", "--profile", "smoke")
    monkeypatch.delenv("LAUNCH_REGISTRY", raising=False)
    refused = launch(project, *smoke)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "LAUNCH_REGISTRY" in refused.stderr and "Traceback" not in refused.stderr
    assert vast.instances() == []
    plan = launch(project, "plan", "jobs/hello.yaml", "--target", "vast")
    assert plan.returncode == 3 and "LAUNCH_REGISTRY" in plan.stdout

    monkeypatch.setenv("LAUNCH_REGISTRY", f"{registry}/lab")
    first = launch(project, *smoke)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pushing launch-hello:" in first.stderr
    assert "› push: 1 of " in first.stderr and " layers" in first.stderr  # said as it goes
    [tag] = catalog(registry)["lab/launch-hello"]
    rec = record(project)
    assert rec["status"] == "succeeded"
    again = launch(project, *smoke)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "image unchanged" in again.stderr and "pushing" not in again.stderr
    assert catalog(registry)["lab/launch-hello"] == [tag]

