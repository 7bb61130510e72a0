"""Fixtures and helpers shared by the Vast emulator tests (imported by tests/sim/test_vast_*).

Every wait is bounded; every instance a test creates is recorded and destroyed in teardown, and
`VastSim.stop()` removes whatever container the emulator made on top of that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.vast import VastSim
from tests.venvs import cached_venv

VASTAI_VERSION = "1.9.1"
KEY = "test-vast-key"


def api(
    sim: VastSim,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    query_key: bool = False,
) -> tuple[int, dict[str, str], Any]:
    """One request as the real client sends it: (status, headers, decoded JSON or text)."""
    url = sim.url + path
    headers = {"Content-Type": "application/json", "User-Agent": "vastai-sdk/1.9.1"}
    if key is not None and query_key:
        url += ("&" if "?" in url else "?") + f"api_key={key}"
    elif key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, dict(e.headers), e.read()
    ctype = hdrs.get("Content-Type", "")
    return status, hdrs, json.loads(raw) if ctype == "application/json" else raw.decode()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30, every: float = 0.2) -> Any:
    """`probe()`'s first truthy value; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})", pytrace=False)


def show(sim: VastSim, iid: int) -> dict[str, Any] | None:
    status, _, body = api(sim, "GET", f"/api/v0/instances/{iid}/?owner=me")
    assert status == 200, body
    return body["instances"]


def wait_status(sim: VastSim, iid: int, status: str, timeout: float = 30) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        row = show(sim, iid)
        return row if row and row["actual_status"] == status else None

    return wait_for(f"instance {iid} to be {status}", probe, timeout)


class Instances:
    """Creates instances through the API and destroys each one at teardown."""

    def __init__(self, sim: VastSim) -> None:
        self.sim = sim
        self.ids: list[int] = []

    def create(self, offer_id: int | None = None, **body: Any) -> int:
        if offer_id is None:
            offer_id = self.free_offer()
        payload = {"client_id": "me", "image": body.pop("image"), "disk": 10, **body}
        payload.setdefault("runtype", "ssh_proxy")
        status, _, res = api(self.sim, "PUT", f"/api/v0/asks/{offer_id}/", payload)
        assert status == 200 and res["success"], res
        self.ids.append(res["new_contract"])
        return res["new_contract"]

    def free_offer(self, gpu: str = "RTX 3090") -> int:
        status, _, res = api(
            self.sim,
            "POST",
            "/api/v0/bundles/",
            {"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "type": "on-demand"},
        )
        assert status == 200 and res["offers"], res
        return int(res["offers"][0]["id"])

    def destroy_all(self) -> None:
        for iid in self.ids:
            if show(self.sim, iid) is not None:
                api(self.sim, "DELETE", f"/api/v0/instances/{iid}/", {})


@pytest.fixture(scope="module")
def vast_sim(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VastSim]:
    sim = VastSim(
        api_key=KEY,
        loading_delay=0.2,
        running_delay=0.2,
        machines="docker",
        state_dir=tmp_path_factory.mktemp("vast-sim"),
    )
    with sim:
        yield sim
    owner = sim.owner
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=launch.sim.owner={owner}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not left, f"VastSim.stop() left containers behind: {left}"


@pytest.fixture
def instances(vast_sim: VastSim) -> Iterator[Instances]:
    made = Instances(vast_sim)
    yield made
    made.destroy_all()


@pytest.fixture(scope="session")
def ssh_bin() -> str:
    """OpenSSH's client; installed with apt when missing (a test setup step, never a skip)."""
    found = shutil.which("ssh")
    if found and shutil.which("ssh-keygen"):
        return found
    proc = subprocess.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client",
        shell=True,
        capture_output=True,
        text=True,
    )
    found = shutil.which("ssh")
    if proc.returncode != 0 or not found:
        pytest.fail(
            "these tests need OpenSSH's ssh and ssh-keygen, and apt-get could not install "
            f"openssh-client:\n{proc.stderr[-2000:]}",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def ssh_key(ssh_bin: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key path, public key line)."""
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vast-sim-test", "-f", str(path)],
        check=True,
    )
    return path, path.with_suffix(".pub").read_text().strip()


def ssh(
    ssh_bin: str, key: Path, port: int, command: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            ssh_bin, "-i", str(key), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            "root@127.0.0.1", command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip


def ssh_ok(ssh_bin: str, key: Path, port: int, command: str, timeout: float = 20) -> str:
    """`command`'s stdout over ssh, retried until sshd answers (bounded)."""
    result: list[subprocess.CompletedProcess[str]] = []

    def probe() -> bool:
        result.append(ssh(ssh_bin, key, port, command))
        return result[-1].returncode == 0

    wait_for(f"ssh to 127.0.0.1:{port} to work", probe, timeout, every=0.5)
    return result[-1].stdout


@pytest.fixture(scope="session")
def vastai_cli() -> Path:
    """The real `vastai` console script (1.9.1) in its own virtualenv, built once and cached.

    vastai pins cryptography==49, which must not meet pydrive2 in the project venv. Run it as
    `python vastai`: the script's shebang names the folder the venv was built in.
    """
    python = cached_venv(
        "vastai",
        [f"vastai=={VASTAI_VERSION}"],
        what="the conformance tests need PyPI or a local mirror",
    )
    return python.parent / "vastai"
