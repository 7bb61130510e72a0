"""`launch gc --target kaggle` with two stores on one Kaggle account (two laptops, or a laptop and
a CI job): each deletes only the kernels it pushed, and lists the other's as not ours.

Kernels are pushed through Kaggle's RPC with the slug and title each store gives them; `launch gc`
runs as a user runs it, once per store (its own LAUNCH_HOME).
"""

from __future__ import annotations

import os
from pathlib import Path

from launcher.sim.kaggle import KaggleSim
from launcher.store.identity import store_key
from tests.conftest import live_run
from tests.targets.kaggle.conftest import KEY, USER, kernels_of, launch


def _push(sim: KaggleSim, slug: str, title: str, script: str) -> str:
    from launcher.targets.kaggle.client import Credentials, KaggleClient

    client = KaggleClient(Credentials(USER, key=KEY), sim.url)
    body = {
        "slug": f"{USER}/{slug}",
        "newTitle": title,
        "text": script,
        "language": "python",
        "kernelType": "script",
        "kernelExecutionType": "QUICK_SAVE",
    }
    assert not client.call("kernels", "save_kernel", body).get("error")
    return f"{USER}/{slug}"


def test_gc_in_one_store_never_deletes_another_stores_kernels(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], launch_home: Path, tmp_path: Path
) -> None:
    env_a, env_b = kaggle_env, dict(kaggle_env, LAUNCH_HOME=str(tmp_path / "store-b"))
    key_a = store_key(launch_home)
    assert key_a != store_key(tmp_path / "store-b")
    live_run(launch_home, "hello-aaaaaa", "kaggle")
    sleeps = "import time\ntime.sleep(120)\n"
    live_a = _push(
        sim, f"launch-hello-aaaaaa-s1-{key_a}", f"launch hello-aaaaaa s1 {key_a}", sleeps
    )
    stray_a = _push(
        sim, f"launch-hello-bbbbbb-s1-{key_a}", f"launch hello-bbbbbb s1 {key_a}", "pass\n"
    )
    older = _push(sim, "launch-hello-cccccc-s1", "launch hello-cccccc s1", "pass\n")
    try:
        b = launch(project, env_b, "gc", "--target", "kaggle", "--yes")
        assert b.returncode == 0, b.stdout + b.stderr
        assert {live_a, stray_a, older} <= set(kernels_of(sim)), b.stdout
        for ref, title in ((live_a, "hello-aaaaaa"), (stray_a, "hello-bbbbbb")):
            assert f"not ours: launch {title} s1 {key_a} (kaggle kernel {ref}): another store's (key {key_a}); `launch gc --all-owners` frees it" in b.stdout  # fmt: skip
        assert f"not ours: launch hello-cccccc s1 (kaggle kernel {older}): labelled by an older launch" in b.stdout  # fmt: skip
        assert "nothing to clean up" in b.stdout

        a = launch(project, env_a, "gc", "--target", "kaggle", "--yes")
        assert a.returncode == 0, a.stdout + a.stderr
        assert set(kernels_of(sim)) == {live_a, older}, a.stdout
        assert f"leaving hello-aaaaaa (pending): its launcher (pid {os.getpid()}) is alive" in a.stdout  # fmt: skip
        assert f"remove {stray_a} (kernel), labelled for run hello-bbbbbb" in a.stdout

        dry = launch(project, env_b, "gc", "--target", "kaggle", "--all-owners")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert (
            "nothing done (`launch gc --target kaggle --all-owners --yes` does it)" in dry.stdout
        )
        assert set(kernels_of(sim)) == {live_a, older}

        b = launch(project, env_b, "gc", "--target", "kaggle", "--all-owners", "--yes")
        assert b.returncode == 0, b.stdout + b.stderr
        assert kernels_of(sim) == [], b.stdout
    finally:
        for ref in kernels_of(sim):
            owner, slug = ref.split("/")
            sim.kernels.delete(USER, {"userName": owner, "kernelSlug": slug})
