"""`launch gc --target vast` with two stores on one Vast account (two laptops, or a laptop and a
CI job): each frees only what it labelled, and lists the other's instances as not ours.

Instances are made through the emulator's API with the labels each store gives them; `launch gc`
runs as a user runs it, once per store (its own LAUNCH_HOME).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from launcher.sim.vast import VastSim
from launcher.store.identity import store_key
from tests.conftest import launch_cmd, live_run
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY

vast_sim = vast_fixtures.vast_sim


def _gc(home: Path, sim: VastSim, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "LAUNCH_"))}
    env.update(LAUNCH_HOME=str(home), LAUNCH_VAST_URL=sim.url, VAST_API_KEY=KEY)
    return subprocess.run(
        [*launch_cmd(), "gc", "--target", "vast", *flags],
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal to confirm at
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gc_in_one_store_never_destroys_another_stores_instances(
    vast_sim: VastSim, base_image: str, launch_home: Path, tmp_path: Path
) -> None:
    home_a, home_b = launch_home, tmp_path / "store-b"
    key_a, key_b = store_key(home_a), store_key(home_b)
    assert key_a != key_b
    live_run(home_a, "hello-aaaaaa", "vast")
    live_a = f"launch:{key_a}:hello-aaaaaa"  # A's run, live
    stray_a = f"launch:{key_a}:hello-bbbbbb"  # A's, its run unknown to A: A's stray
    older = "launch-hello-cccccc"  # labelled by a launch from before store keys
    made = vast_fixtures.Instances(vast_sim)
    try:
        ids = {
            label: made.create(image=base_image, label=label) for label in (live_a, stray_a, older)
        }
        for iid in ids.values():  # booted (a destroy mid-boot races in the emulator's docker)
            vast_fixtures.wait_status(vast_sim, iid, "running")

        def alive() -> set[str]:
            return {label for label, iid in ids.items() if vast_sim.instance(iid) is not None}

        b = _gc(home_b, vast_sim, "--yes")
        assert b.returncode == 0, b.stdout + b.stderr
        assert alive() == {live_a, stray_a, older}, b.stdout
        for label in (live_a, stray_a):
            assert f"not ours: {label} (vast instance {ids[label]}, running): another store's (key {key_a}); `launch gc --all-owners` frees it" in b.stdout  # fmt: skip
        assert f"not ours: {older} (vast instance {ids[older]}, running): labelled by an older launch" in b.stdout  # fmt: skip
        assert "nothing to clean up" in b.stdout

        a = _gc(home_a, vast_sim, "--yes")
        assert a.returncode == 0, a.stdout + a.stderr
        assert alive() == {live_a, older}, a.stdout
        assert f"leaving hello-aaaaaa (pending): its launcher (pid {os.getpid()}) is alive" in a.stdout  # fmt: skip
        assert f"remove {ids[stray_a]} (running), labelled for run hello-bbbbbb" in a.stdout
        assert f"not ours: {older}" in a.stdout

        # the flag that frees other stores' instances: listed first, without --yes nothing done
        dry = _gc(home_b, vast_sim, "--all-owners")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"remove {live_a} (vast instance {ids[live_a]}, running): not ours" in dry.stdout
        assert "nothing done (`launch gc --target vast --all-owners --yes` does it)" in dry.stdout
        assert alive() == {live_a, older}

        b = _gc(home_b, vast_sim, "--all-owners", "--yes")
        assert b.returncode == 0, b.stdout + b.stderr
        assert alive() == set(), b.stdout
    finally:
        made.destroy_all()
