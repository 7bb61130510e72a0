"""Conformance: the real, unchanged `vastai` 1.9.1 CLI works against the Vast emulator.

The CLI runs from its own virtualenv (it pins cryptography==49), pointed at the emulator only by
environment: `VAST_URL` (read at import), `VAST_API_KEY`, `VASTAI_NO_UPDATE_CHECK=1`, and a
throwaway HOME/XDG so nothing touches the user's ~/.config/vastai.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.vast import VastSim
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY, wait_for

# the shared fixtures, by name
instances = vast_fixtures.instances
vast_sim = vast_fixtures.vast_sim
vastai_cli = vast_fixtures.vastai_cli

pytestmark = pytest.mark.docker


@pytest.fixture
def vastai(vastai_cli: Path, vast_sim: VastSim, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "VAST_URL": vast_sim.url,
        "VAST_API_KEY": KEY,
        "VASTAI_NO_UPDATE_CHECK": "1",
    }

    def run(
        *args: str, key: str | None = KEY, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        e = dict(env)
        if key is None:
            e.pop("VAST_API_KEY")
        else:
            e["VAST_API_KEY"] = key
        proc = subprocess.run(
            [str(vastai_cli.parent / "python"), str(vastai_cli), *args],
            env=e,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert proc.returncode == 0, (
                f"vastai {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


def raw(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"vastai printed no JSON:\n{proc.stdout}\n{proc.stderr}", pytrace=False)


def test_search_offers_filters_coerces_and_orders(vastai, vast_sim: VastSim) -> None:
    offers = raw(
        vastai(
            "search",
            "offers",
            "gpu_name=RTX_4090 num_gpus=1 reliability>0.98",
            "-o",
            "dph+",
            "--raw",
        )
    )
    assert offers, "no offers"
    for o in offers:
        assert o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1 and o["reliability"] > 0.98
        assert o["verification"] == "verified" and o["rentable"] is True
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    # exactly the catalog's matching machines: 1-GPU, verified, reliable 4090s
    expected = {
        o["id"]
        for o in vast_sim.book.offers  # type: ignore[union-attr]
        if o["gpu_name"] == "RTX 4090"
        and o["num_gpus"] == 1
        and o["reliability"] > 0.98
        and o["verified"]
        and o["rentable"]
    }
    assert {o["id"] for o in offers} == expected
    # the CLI's table output works too (it insists on Content-Type exactly application/json)
    table = vastai(
        "search",
        "offers",
        "gpu_name in [RTX_4090,RTX_A6000] cuda_vers>=12.1",
        "-i",
        "--limit",
        "3",
    ).stdout
    assert "RTX_4090" in table or "RTX 4090" in table, table
    # interruptible search prices at the bid floor
    bids = raw(
        vastai("search", "offers", "gpu_name=RTX_4090 num_gpus=1", "-i", "-o", "dph+", "--raw")
    )
    assert all(b["dph_total"] < b["dph_base"] for b in bids)


def test_create_show_destroy_instance(vastai, vast_sim: VastSim, base_image: str) -> None:
    offers = raw(
        vastai(
            "search",
            "offers",
            "gpu_name=RTX_4090 num_gpus=1 reliability>0.98",
            "-o",
            "dph+",
            "--raw",
        )
    )
    offer = offers[0]["id"]
    made = raw(
        vastai(
            "create",
            "instance",
            str(offer),
            "--image",
            base_image,
            "--disk",
            "10",
            "--ssh",
            "--label",
            "run-x",
            "--env",
            "-e JOB=cli",
            "--onstart-cmd",
            "echo started > /root/started",
            "--raw",
        )
    )
    assert made["success"] is True
    iid = made["new_contract"]
    try:

        def running() -> dict[str, Any] | None:
            rows = raw(vastai("show", "instances", "--raw"))
            mine = [r for r in rows if r["id"] == iid]
            return mine[0] if mine and mine[0]["actual_status"] == "running" else None

        row = wait_for(
            f"`vastai show instances` to list {iid} running", running, timeout=60, every=0.5
        )
        assert row["label"] == "run-x" and row["intended_status"] == "running"
        assert row["ssh_host"] == "127.0.0.1" and row["ssh_port"] > 0
        assert row["extra_env"] == {"JOB": "cli"}  # the CLI turns the pairs into a dict
        one = raw(vastai("show", "instance", str(iid), "--raw"))
        assert one["id"] == iid and one["actual_status"] == "running"
        # the offer is rented now: the default search (rentable=true) no longer lists it
        again = raw(
            vastai("search", "offers", "gpu_name=RTX_4090 num_gpus=1 reliability>0.98", "--raw")
        )
        assert offer not in {o["id"] for o in again}
        container = vast_sim.machine_handle(iid)
        labels = json.loads(
            subprocess.run(
                ["docker", "inspect", "-f", "{{json .Config.Labels}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert labels["launch.sim"] == "vast" and labels["launch.sim.label"] == "run-x"
        assert (
            vastai("ssh-url", str(iid)).stdout.strip() == f"ssh://root@127.0.0.1:{row['ssh_port']}"
        )
    finally:
        # 1.9.1's `destroy instance` prints nothing with --raw (it drops the answer); exit 0
        vastai("destroy", "instance", str(iid), "-y")
    assert all(r["id"] != iid for r in raw(vastai("show", "instances", "--raw")))
    gone = subprocess.run(["docker", "inspect", container], capture_output=True, text=True)
    assert gone.returncode != 0, "the destroyed instance's container is still there"
    back = raw(
        vastai("search", "offers", "gpu_name=RTX_4090 num_gpus=1 reliability>0.98", "--raw")
    )
    assert offer in {o["id"] for o in back}


def test_cli_with_a_wrong_key_is_refused(vastai) -> None:
    proc = vastai("show", "instances", "--raw", key="not-the-key", check=False)
    assert proc.returncode != 0 or "401" in proc.stdout + proc.stderr, proc
    assert "401" in proc.stdout + proc.stderr


def test_cli_stop_start_and_logs(vastai, vast_sim: VastSim, base_image: str) -> None:
    offer = raw(vastai("search", "offers", "gpu_name=RTX_3090 num_gpus=1", "-o", "dph+", "--raw"))[
        0
    ]["id"]
    iid = raw(vastai("create", "instance", str(offer), "--image", base_image, "--ssh",
                     "--onstart-cmd", "echo hello-from-onstart", "--raw"))["new_contract"]  # fmt: skip
    try:

        def status(want: str) -> bool:
            return raw(vastai("show", "instance", str(iid), "--raw"))["actual_status"] == want

        wait_for(f"{iid} running", lambda: status("running"), timeout=60, every=0.5)
        logs = wait_for("the onstart line in `vastai logs`",
                        lambda: "hello-from-onstart" in vastai("logs", str(iid)).stdout, timeout=20)  # fmt: skip
        assert logs
        vastai("stop", "instance", str(iid))
        row = raw(vastai("show", "instance", str(iid), "--raw"))
        assert (row["actual_status"], row["intended_status"]) == ("stopped", "stopped")
        vastai("start", "instance", str(iid))
        wait_for(f"{iid} running again", lambda: status("running"), timeout=60, every=0.5)
        vastai("label", "instance", str(iid), "relabelled")
        assert raw(vastai("show", "instance", str(iid), "--raw"))["label"] == "relabelled"
    finally:
        vastai("destroy", "instance", str(iid), "-y")


SDK_SCRIPT = """
import json, sys, time
from vastai import VastAI
url, key, image, pub = sys.argv[1:5]
v = VastAI(api_key=key, server_url=url)
offers = v.search_offers("gpu_name=RTX_4090 num_gpus=1", order="dph_total")
made = v.create_instance(offers[0]["id"], image=image, disk=10, ssh=True, label="sdk")
iid = made["new_contract"]
deadline = time.monotonic() + 60
while (row := v.show_instance(iid))["actual_status"] != "running":
    assert time.monotonic() < deadline, row
    time.sleep(0.3)
attached = v.attach_ssh(iid, pub)
url_ = v.ssh_url(iid)
gone = v.destroy_instance(iid)
print(json.dumps({"offers": offers, "iid": iid, "row": row, "attached": attached,
                  "ssh_url": url_, "gone": gone, "after": v.show_instance(iid)}))
"""


def test_real_sdk_retries_429_with_retry_after(
    vastai_cli: Path, vast_sim: VastSim, base_image: str, tmp_path: Path
) -> None:
    """The `VastAI` SDK, unchanged, through a 429 (it honours Retry-After) and a 503."""
    python = vastai_cli.parent / "python"
    # the SDK tries 3 times (retry=3): a 429 and a 503 must be ridden out, a third would not be
    vast_sim.fail_next(1, 429, retry_after=0.2)
    vast_sim.fail_next(1, 503, retry_after=None)
    start = len(vast_sim.app.seen)  # type: ignore[union-attr]
    proc = subprocess.run(
        [str(python), "-c", SDK_SCRIPT, vast_sim.url, KEY, base_image, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq7 sdk"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VASTAI_NO_UPDATE_CHECK": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["offers"] and all(
        o["gpu_name"] == "RTX 4090" and o["rented"] is False for o in out["offers"]
    )
    assert out["row"]["label"] == "sdk" and out["row"]["extra_env"] == {}
    assert out["attached"]["success"] is True and out["gone"]["success"] is True
    assert out["ssh_url"] == f"ssh://root@127.0.0.1:{out['row']['ssh_port']}"
    assert out["after"] is None
    seen = [p for _, p, _ in list(vast_sim.app.seen)[start:]]  # type: ignore[union-attr]
    assert seen[:3] == ["/api/v0/bundles/"] * 3, seen  # 429, 503, then the answer
