"""`python -m launcher.sim.vast --port N` (what `launch sim serve vast` runs): foreground, prints
its URL once it answers, and removes every instance's container when it is stopped."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.sim.vast_fixtures import wait_for

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, method: str, path: str, body: object = None) -> dict:
    req = urllib.request.Request(
        url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_serve_prints_url_and_cleans_up_on_sigterm(base_image: str) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.sim.vast", "--port", str(port), "--api-key", "k",
         "--loading-delay", "0", "--running-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    owner_containers: list[str] = []
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed only once it listens
        assert url == f"http://127.0.0.1:{port}"
        assert "RTX 4090" in _call(url, "GET", "/api/v0/gpu_names/unique/")["gpu_names"]
        offer = _call(url, "POST", "/api/v0/bundles/", {"order": [["dph_total", "asc"]]})[
            "offers"
        ][0]
        iid = _call(url, "PUT", f"/api/v0/asks/{offer['id']}/", {"image": base_image})[
            "new_contract"
        ]

        def running() -> bool:
            return (
                _call(url, "GET", f"/api/v0/instances/{iid}/")["instances"]["actual_status"]
                == "running"
            )

        wait_for("the instance to run", running, timeout=30)
        owner = _call(url, "GET", "/_sim/state")["owner"]
        owner_containers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=launch.sim.owner={owner}", "--filter", "label=launch.sim=vast"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert owner_containers
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    for c in owner_containers:
        assert subprocess.run(["docker", "inspect", c], capture_output=True).returncode != 0, c
