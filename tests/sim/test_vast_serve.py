"""`launch sim serve vast` and `python -m launcher.sim.vast`: foreground, print the URL once it
answers (and the exports to paste), and remove every instance's container when stopped."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import default_signals, launch_cmd
from tests.sim.vast_fixtures import wait_for

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


KEY = {"cli": "vast-sim-key", "module": "k"}


def _call(url: str, method: str, path: str, body: object = None, key: str = "k") -> dict:
    req = urllib.request.Request(
        url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("entry", ["cli", "module"])
def test_serve_prints_url_and_cleans_up_on_sigterm(base_image: str, entry: str) -> None:
    port = _free_port()
    if entry == "cli":
        cmd = [*launch_cmd(), "sim", "serve", "vast", "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "launcher.sim.vast", "--port", str(port), "--api-key", "k",
               "--loading-delay", "0", "--running-delay", "0"]  # fmt: skip
    key = KEY[entry]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    owner_containers: list[str] = []
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed only once it listens
        assert url == f"http://127.0.0.1:{port}"
        assert "RTX 4090" in _call(url, "GET", "/api/v0/gpu_names/unique/", key=key)["gpu_names"]
        offer = _call(url, "POST", "/api/v0/bundles/", {"order": [["dph_total", "asc"]]}, key)[
            "offers"
        ][0]
        iid = _call(url, "PUT", f"/api/v0/asks/{offer['id']}/", {"image": base_image}, key)[
            "new_contract"
        ]

        def running() -> bool:
            return (
                _call(url, "GET", f"/api/v0/instances/{iid}/", key=key)["instances"][
                    "actual_status"
                ]
                == "running"
            )

        wait_for("the instance to run", running, timeout=30)
        if entry == "cli":  # what a user pastes to point launch (and vastai) at it
            assert proc.stderr is not None
            assert proc.stderr.readline().strip() == "# launch:"
            assert proc.stderr.readline().split() == [
                "export",
                f"LAUNCH_VAST_URL={url}",
                f"VAST_API_KEY={key}",
            ]
        owner = _call(url, "GET", "/_sim/state", key=key)["owner"]
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
