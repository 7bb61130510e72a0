"""The Vast emulator's instances are real: a container with a real sshd, reached with OpenSSH;
search filters and ordering behave like the service; auth; and each failure knob."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from launcher.sim.vast import VastSim
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY, Instances, api, show, ssh, ssh_ok, wait_status

# the shared fixtures, by name
instances = vast_fixtures.instances
ssh_bin = vast_fixtures.ssh_bin
ssh_key = vast_fixtures.ssh_key
vast_sim = vast_fixtures.vast_sim

pytestmark = pytest.mark.docker

DEFAULTS = {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True}}


def search(sim: VastSim, **body: object) -> list[dict]:
    status, headers, res = api(sim, "POST", "/api/v0/bundles/", body)
    assert status == 200, res
    assert headers["Content-Type"] == "application/json"
    return res["offers"]


def test_instance_is_a_real_container_with_sshd_and_onstart(
    vast_sim: VastSim,
    instances: Instances,
    base_image: str,
    ssh_bin: str,
    ssh_key: tuple[Path, str],
) -> None:
    key_path, pub = ssh_key
    iid = instances.create(
        image=base_image,
        env={"JOB_ID": "j-42", "-p 8080:8080": "1"},
        onstart='echo "onstart ran for $JOB_ID" > /root/onstart-ran',
        label="run-ssh",
    )
    row = wait_status(vast_sim, iid, "running")
    assert row["intended_status"] == "running" and row["cur_state"] == "running"
    assert isinstance(row["start_date"], float) and row["dph_total"] > 0
    assert row["extra_env"] == [["JOB_ID", "j-42"], ["-p 8080:8080", "1"]]
    assert row["ssh_host"] == "127.0.0.1" and row["public_ipaddr"] == "127.0.0.1"
    assert row["ports"]["22/tcp"][0]["HostPort"] == str(row["ssh_port"])
    assert "8080/tcp" in row["ports"]  # `-p` options publish ports, as on Vast

    port = row["ssh_port"]
    refused = ssh(ssh_bin, key_path, port, "true")
    assert refused.returncode != 0, "ssh let an unknown key in"
    status, _, res = api(vast_sim, "POST", f"/api/v0/instances/{iid}/ssh/", {"ssh_key": pub})
    assert status == 200 and res["success"], res

    assert ssh_ok(ssh_bin, key_path, port, "python3 -c 'print(6*7)'").strip() == "42"
    assert (
        ssh_ok(ssh_bin, key_path, port, "cat /root/onstart-ran").strip() == "onstart ran for j-42"
    )
    # the image's ENTRYPOINT/CMD did not run; sshd + onstart did, and the host keys are its own
    host_key = ssh_ok(ssh_bin, key_path, port, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    baked = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", base_image, "/etc/ssh/ssh_host_ed25519_key.pub"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[1]  # fmt: skip
    assert host_key != baked

    # logs come back through request_logs -> an unauthenticated result_url
    status, _, res = api(
        vast_sim, "PUT", f"/api/v0/instances/request_logs/{iid}/", {"tail": "100"}
    )
    assert status == 200 and res["result_url"].startswith(vast_sim.url)

    # drop SSH: connections fail while the instance stays running; restore brings it back
    vast_sim.drop_ssh(iid)
    assert ssh(ssh_bin, key_path, port, "true").returncode != 0
    assert show(vast_sim, iid)["actual_status"] == "running"
    vast_sim.restore_ssh(iid)
    assert ssh_ok(ssh_bin, key_path, port, "echo back").strip() == "back"


def test_search_filters_ordering_and_limit(vast_sim: VastSim) -> None:
    everything = search(vast_sim, type="on-demand")
    assert len(everything) >= 10

    big = search(vast_sim, gpu_ram={"gt": "40000"}, order=[["dph_total", "asc"]])
    assert big and all(o["gpu_ram"] > 40000 for o in big)
    assert [o["dph_total"] for o in big] == sorted(o["dph_total"] for o in big)

    some = search(vast_sim, gpu_name={"in": ["RTX 3090", "Tesla T4"]})
    assert {o["gpu_name"] for o in some} == {"RTX 3090", "Tesla T4"}
    rest = search(vast_sim, gpu_name={"notin": ["RTX 4090", "RTX 3090"]}, num_gpus={"gte": "2"})
    assert rest and all(
        o["gpu_name"] not in ("RTX 4090", "RTX 3090") and o["num_gpus"] >= 2 for o in rest
    )

    by_score = search(vast_sim, **DEFAULTS, order=[["score", "desc"]], limit=3)
    assert len(by_score) == 3
    assert [o["score"] for o in by_score] == sorted((o["score"] for o in by_score), reverse=True)
    assert by_score[0]["score"] == max(o["score"] for o in search(vast_sim, **DEFAULTS))

    cheap = search(vast_sim, **DEFAULTS, reliability={"gte": "0.99"}, dph_total={"lt": "0.5"})
    assert cheap and all(
        o["reliability"] >= 0.99 and o["dph_total"] < 0.5 and o["verified"] for o in cheap
    )

    # storage is priced into dph_total; interruptible prices at the bid floor
    small = {o["id"]: o for o in search(vast_sim, allocated_storage=5.0)}
    large = {o["id"]: o for o in search(vast_sim, allocated_storage=500.0)}
    bids = {o["id"]: o for o in search(vast_sim, type="bid", allocated_storage=5.0)}
    for oid, o in small.items():
        assert large[oid]["dph_total"] > o["dph_total"] > o["dph_base"]
        assert bids[oid]["dph_total"] < o["dph_total"] and bids[oid]["is_bid"] is True

    status, _, res = api(vast_sim, "POST", "/api/v0/bundles/", {"no_such_field": {"eq": 1}})
    assert status == 400 and "no_such_field" in res["msg"]


def test_auth(vast_sim: VastSim) -> None:
    status, headers, res = api(vast_sim, "GET", "/api/v0/gpu_names/unique/", key=None)
    assert status == 200 and "RTX 4090" in res["gpu_names"]
    assert headers["Content-Type"] == "application/json"
    assert api(vast_sim, "GET", "/api/v1/instances/", key=None)[0] == 401
    assert api(vast_sim, "GET", "/api/v1/instances/", key="wrong")[0] == 401
    assert api(vast_sim, "POST", "/api/v0/bundles/", {}, key=None)[0] == 401
    assert api(vast_sim, "GET", "/api/v1/instances/", query_key=True)[0] == 200
    status, _, user = api(vast_sim, "GET", "/api/v0/users/current")
    assert status == 200 and user["host_agreement_accepted"] is False


def test_429_and_5xx_knobs(vast_sim: VastSim) -> None:
    vast_sim.fail_next(2, 429, retry_after=3)
    for _ in range(2):
        status, headers, _ = api(vast_sim, "GET", "/api/v1/instances/")
        assert status == 429 and headers["Retry-After"] == "3"
    assert api(vast_sim, "GET", "/api/v1/instances/")[0] == 200
    # the same knob over HTTP, for tests that drive a separate process
    status, _, _ = api(vast_sim, "POST", "/_sim/fail", {"count": 1, "status": 503}, key=None)
    assert status == 200
    assert api(vast_sim, "GET", "/api/v1/instances/")[0] == 503
    assert api(vast_sim, "GET", "/api/v1/instances/")[0] == 200


def test_list_paging_and_filters(vast_sim: VastSim, instances: Instances, base_image: str) -> None:
    a = instances.create(image=base_image, label="page-a")
    b = instances.create(image=base_image, label="page-b")
    q = "select_filters=" + quote('{"label": {"eq": "page-b"}}') + "&limit=25"
    status, _, res = api(vast_sim, "GET", f"/api/v1/instances/?{q}")
    assert (
        status == 200
        and [r["id"] for r in res["instances"]] == [b]
        and res["total_instances"] == 1
    )
    q = "order_by=" + quote('[{"col": "id", "dir": "desc"}]') + "&limit=1"
    status, _, res = api(vast_sim, "GET", f"/api/v1/instances/?{q}")
    assert [r["id"] for r in res["instances"]] == [b] and res["next_token"]
    status, _, res = api(
        vast_sim, "GET", f"/api/v1/instances/?{q}&after_token={res['next_token']}"
    )
    assert [r["id"] for r in res["instances"]] == [a] and res["next_token"] is None
    assert res["label_counts"] == {"page-a": 1, "page-b": 1}


def test_preempt_exit_and_stop(vast_sim: VastSim, instances: Instances, base_image: str) -> None:
    iid = instances.create(image=base_image, price=0.2, offer_id=instances.free_offer())
    row = wait_status(vast_sim, iid, "running")
    assert row["is_bid"] is True
    container = vast_sim.machine_handle(iid)

    vast_sim.preempt(iid)
    row = show(vast_sim, iid)
    assert row["actual_status"] == "stopped" and row["intended_status"] == "running"
    assert _docker_status(container) != "running"
    # starting an outbid instance does not win it back; a higher bid does
    assert api(vast_sim, "PUT", f"/api/v0/instances/{iid}/", {"state": "running"})[0] == 200
    assert show(vast_sim, iid)["actual_status"] == "stopped"
    assert (
        api(
            vast_sim,
            "PUT",
            f"/api/v0/instances/bid_price/{iid}/",
            {"client_id": "me", "price": 0.3},
        )[0]
        == 200
    )
    row = wait_status(vast_sim, iid, "running")
    assert row["dph_total"] > 0.3
    vast_sim.preempt(iid, pause=True)
    assert (
        show(vast_sim, iid)["actual_status"] == "stopped" and _docker_status(container) == "paused"
    )
    vast_sim.resume(iid)
    wait_status(vast_sim, iid, "running")

    # stop/start through the API: intended follows
    assert api(vast_sim, "PUT", f"/api/v0/instances/{iid}/", {"state": "stopped"})[0] == 200
    row = show(vast_sim, iid)
    assert row["actual_status"] == "stopped" and row["intended_status"] == "stopped"
    assert api(vast_sim, "PUT", f"/api/v0/instances/{iid}/", {"state": "running"})[0] == 200
    wait_status(vast_sim, iid, "running")

    # reboot: back through loading to running, same container
    assert api(vast_sim, "PUT", f"/api/v0/instances/reboot/{iid}/", {})[0] == 200
    wait_status(vast_sim, iid, "running")
    assert vast_sim.machine_handle(iid) == container

    status, _, _ = api(vast_sim, "POST", f"/_sim/instances/{iid}/exit", {}, key=None)
    assert status == 200
    row = wait_status(vast_sim, iid, "exited", timeout=10)
    assert row["intended_status"] == "running"


def test_destroy_releases_the_offer_and_create_failures(
    vast_sim: VastSim, instances: Instances, base_image: str
) -> None:
    offer = instances.free_offer()
    iid = instances.create(offer, image=base_image)
    assert offer not in {o["id"] for o in search(vast_sim, rentable={"eq": True})}
    status, _, res = api(vast_sim, "PUT", f"/api/v0/asks/{offer}/", {"image": base_image})
    assert status == 410 and res["success"] is False
    wait_status(vast_sim, iid, "running")
    container = vast_sim.machine_handle(iid)
    assert api(vast_sim, "DELETE", f"/api/v0/instances/{iid}/", {})[0] == 200
    assert show(vast_sim, iid) is None
    assert subprocess.run(["docker", "inspect", container], capture_output=True).returncode != 0
    assert offer in {o["id"] for o in search(vast_sim, rentable={"eq": True})}

    # onstart is capped at about 4 KB, as on Vast
    status, _, res = api(
        vast_sim, "PUT", f"/api/v0/asks/{offer}/", {"image": base_image, "onstart": "x" * 5000}
    )
    assert status == 400 and "4048" in res["msg"]
    # a refused create leaves nothing behind
    before = len(vast_sim.instances())
    vast_sim.fail_next_create("error", 400, "no capacity")
    status, _, res = api(vast_sim, "PUT", f"/api/v0/asks/{offer}/", {"image": base_image})
    assert status == 400 and res["msg"] == "no capacity"
    assert len(vast_sim.instances()) == before
    # a create whose answer is lost: 500, yet the instance exists (list before retrying!)
    vast_sim.fail_next_create("lost", 500)
    status, _, _ = api(
        vast_sim, "PUT", f"/api/v0/asks/{offer}/", {"image": base_image, "label": "lost"}
    )
    assert status == 500
    lost = [r for r in vast_sim.instances() if r["label"] == "lost"]
    assert len(lost) == 1
    instances.ids.append(lost[0]["id"])
    # an image the engine does not have, named without a registry host (the emulator pulls
    # only from registries, as a Vast host does) ends in exited, with why
    bad = instances.create(image="launch-no-such-image:nope")
    row = wait_status(vast_sim, bad, "exited", timeout=10)
    assert "pulls only images named with a registry host" in row["status_msg"]
    # named with one, it is pulled: from a registry that does not answer, the pull fails
    unreachable = instances.create(image="127.0.0.1:9/lab/nothing:1")
    row = wait_status(vast_sim, unreachable, "exited", timeout=30)
    assert "image pull failed" in row["status_msg"]


def test_stop_removes_every_container(base_image: str) -> None:
    sim = VastSim(api_key=KEY, loading_delay=0, running_delay=0, machines="docker")
    with sim:
        made = Instances(sim)
        made.create(image=base_image)
        iid = made.create(image=base_image)
        wait_status(sim, iid, "running")
    time.sleep(0.1)
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=launch.sim.owner={sim.owner}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert left == []


def _docker_status(container: str | None) -> str:
    assert container
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_knobs_before_the_machine_booted_neither_deadlock_nor_wait_long(
    vast_sim: VastSim, instances: Instances, base_image: str
) -> None:
    # exit() marks the instance and returns: the machine dies as soon as it has booted
    early = instances.create(image=base_image)
    t0 = time.monotonic()
    vast_sim.exit(early)
    assert time.monotonic() - t0 < 2, "exit() waited for the boot"
    assert show(vast_sim, early)["actual_status"] == "exited"
    row = wait_status(vast_sim, early, "exited", timeout=30)
    assert row["intended_status"] == "running"
    # the other knobs wait for the boot, without holding the lock the boot needs
    other = instances.create(image=base_image)
    t0 = time.monotonic()
    vast_sim.preempt(other)
    assert time.monotonic() - t0 < 30
    assert show(vast_sim, other)["actual_status"] == "stopped"
