"""The Kaggle sim's kernels really run: caps, failures, quota, injected errors, uploads, cleanup.

These talk the wire protocol directly (stdlib HTTP, the requests kagglesdk sends); the unchanged
CLI is exercised in test_kaggle_conformance.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.kaggle import KaggleSim

USER, KEY = "alice", "0123456789abcdef"
AUTH = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
KERNELS = "kernels.KernelsApiService"


class Rpc:
    def __init__(self, url: str, prefix: str = "/api/v1") -> None:
        self.url, self.prefix = url, prefix

    def raw(
        self, method: str, body: dict[str, Any] | None = None, auth: str | None = AUTH
    ) -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(
            f"{self.url}{self.prefix}/{method}",
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                **({"Authorization": auth} if auth else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read() or b"{}")

    def __call__(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, _, payload = self.raw(method, body)
        assert status == 200, (status, payload)
        return payload


def put(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


@pytest.fixture
def sim(base_image: str, tmp_path: Path) -> Iterator[KaggleSim]:
    with KaggleSim(
        image=base_image, runtime="docker", queue_seconds=0.1, grace_seconds=3, data_dir=tmp_path
    ) as s:
        yield s


def push(rpc: Rpc, slug: str, code: str, **extra: Any) -> dict[str, Any]:
    body = {
        "slug": f"{USER}/{slug}",
        "newTitle": slug,
        "text": code,
        "language": "python",
        "kernelType": "script",
        "isPrivate": True,
        "enableInternet": False,
        **extra,
    }
    return rpc(f"{KERNELS}/SaveKernel", body)


def status(rpc: Rpc, slug: str) -> dict[str, Any]:
    return rpc(f"{KERNELS}/GetKernelSessionStatus", {"userName": USER, "kernelSlug": slug})


def wait_log(sim: KaggleSim, slug: str, line: str, timeout: float = 60) -> None:
    """Wait until the script printed ``line`` (its container is up and running it)."""
    deadline = time.time() + timeout
    while not any(e["data"] == line for e in sim.latest_session(USER, slug).log):
        assert time.time() < deadline, f"{slug} never printed {line!r}"
        time.sleep(0.1)


def outputs(rpc: Rpc, slug: str) -> dict[str, bytes]:
    listing = rpc(
        f"{KERNELS}/ListKernelSessionOutput",
        {"userName": USER, "kernelSlug": slug, "pageSize": 20, "pageToken": ""},
    )
    files: dict[str, bytes] = {}
    for f in listing["files"]:
        with urllib.request.urlopen(f["url"], timeout=30) as r:  # no auth, as the CLI fetches
            files[f["fileName"]] = r.read()
    return files


def gpu_used(rpc: Rpc) -> float:
    return float(
        rpc(f"{KERNELS}/GetAcceleratorQuotaStatistics")["gpuQuota"]["timeUsed"].rstrip("s")
    )


def test_session_cap_sends_sigterm_and_keeps_what_the_script_saved(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    code = (
        "import pathlib, signal, sys, time\n"
        "def on_term(*_):\n"
        "    pathlib.Path('/kaggle/working/checkpoint.txt').write_text('saved on SIGTERM')\n"
        "    print('got SIGTERM', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    push(rpc, "capped", code)
    wait_log(sim, "capped", "started\n")
    # the cap is set mid-run (a knob), so a slow container start cannot eat the script's time
    sim.set_session_seconds(sim.latest_session(USER, "capped").running_seconds() + 1)
    t0 = time.time()
    s = sim.wait(USER, "capped", timeout=60)
    assert time.time() - t0 < 1 + 3 + 5  # cap + grace + container stop
    answer = status(rpc, "capped")
    assert answer["status"] == "ERROR"
    assert "timed out" in answer["failureMessage"]
    assert outputs(rpc, "capped") == {"checkpoint.txt": b"saved on SIGTERM"}
    assert [e["data"] for e in s.log] == ["started\n", "got SIGTERM\n"]


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    sim.grace_seconds = 1
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(120)\n"
    push(rpc, "stubborn", code)
    wait_log(sim, "stubborn", "up\n")
    sim.expire_session(USER, "stubborn")  # "a session cap reached mid-run"
    t0 = time.time()
    s = sim.wait(USER, "stubborn", timeout=30)
    assert time.time() - t0 < 1 + 8
    assert s.status == "ERROR" and s.exit_code not in (0, None)


def test_failing_script_and_injected_failure_end_in_error(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    push(rpc, "crashes", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    assert sim.wait(USER, "crashes").status == "ERROR"
    answer = status(rpc, "crashes")
    assert answer == {
        "status": "ERROR",
        "failureMessage": "The kernel's script exited with code 3",
    }

    sim.fail_next_kernel("simulated out-of-memory")
    push(rpc, "would-pass", "print('fine')\n")
    s = sim.wait(USER, "would-pass")
    assert s.status == "ERROR" and s.failure_message == "simulated out-of-memory"
    assert any(
        "simulated out-of-memory" in e["data"] for e in s.log if e["stream_name"] == "stderr"
    )
    push(rpc, "would-pass", "print('fine')\n")  # the knob is spent: version 2 passes
    assert sim.wait(USER, "would-pass").status == "COMPLETE"


def test_429_and_5xx_knobs_answer_the_next_requests(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    sim.fail_next_requests(2, 429, retry_after=0)
    for _ in range(2):
        code, headers, body = rpc.raw(f"{KERNELS}/GetAcceleratorQuotaStatistics")
        assert code == 429 and body == {"code": 429, "message": "Too Many Requests"}
        assert headers["Retry-After"] == "0"
    assert rpc.raw(f"{KERNELS}/GetAcceleratorQuotaStatistics")[0] == 200

    sim.fail_next_requests(1, 503, method="SaveKernel")
    assert rpc.raw(f"{KERNELS}/GetAcceleratorQuotaStatistics")[0] == 200  # other RPCs pass
    code, _, _ = rpc.raw(f"{KERNELS}/SaveKernel", {"slug": f"{USER}/x", "text": "print(1)"})
    assert code == 503


def test_gpu_quota_grows_by_the_run_time_and_stops_a_run_when_spent(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    assert gpu_used(rpc) == 0
    push(rpc, "cpu-only", "import time\ntime.sleep(1)\n")
    sim.wait(USER, "cpu-only")
    assert gpu_used(rpc) == 0  # CPU sessions draw no accelerator quota

    push(
        rpc, "on-gpu", "import time\ntime.sleep(2)\n", enableGpu=True, machineShape="NvidiaTeslaT4"
    )
    s = sim.wait(USER, "on-gpu")
    assert s.status == "COMPLETE"
    used = gpu_used(rpc)
    assert used == pytest.approx(s.running_seconds(), abs=0.01)
    assert 2.0 <= used < 2.0 + 5

    sim.set_quota(gpu_seconds=used + 2)  # two seconds left
    push(rpc, "out-of-quota", "import time\ntime.sleep(60)\n", enableGpu=True)
    s = sim.wait(USER, "out-of-quota", timeout=30)
    assert s.status == "ERROR" and "quota" in (s.failure_message or "")
    answer = push(rpc, "refused", "print(1)\n", enableGpu=True)
    assert "quota" in answer["error"] and "versionNumber" not in answer


def test_blob_upload_resumable_put_in_two_parts(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    data = b"0123456789abcdefghij"
    start = rpc(
        "blobs.BlobApiService/StartBlobUpload",
        {"type": "DATASET", "name": "parts.bin", "contentLength": len(data)},
    )
    url = start["createUrl"]
    assert url.startswith(sim.url + "/_emu/upload/")
    code, headers = put(url, data[:8], {"Content-Range": f"bytes 0-7/{len(data)}"})
    assert code == 308 and headers["Range"] == "bytes=0-7"
    code, headers = put(url, b"", {"Content-Range": f"bytes */{len(data)}"})  # the client's probe
    assert code == 308 and headers["Range"] == "bytes=0-7"
    code, _ = put(url, data[8:], {"Content-Range": f"bytes 8-{len(data) - 1}/{len(data)}"})
    assert code == 200
    assert put(url, b"", {"Content-Range": f"bytes */{len(data)}"})[0] == 200
    assert put(sim.url + "/_emu/upload/blob-unknown", b"x", {})[0] == 404  # expired: restart

    answer = rpc(
        "datasets.DatasetApiService/CreateDataset",
        {"ownerSlug": USER, "slug": "two-parts", "title": "two parts", "licenseName": "CC0-1.0",
         "isPrivate": True, "files": [{"token": start["token"]}]},
    )  # fmt: skip
    assert answer["status"] == "Ok"
    files = rpc(
        "datasets.DatasetApiService/ListDatasetFiles",
        {"ownerSlug": USER, "datasetSlug": "two-parts"},
    )
    assert [(f["name"], f["totalBytes"]) for f in files["datasetFiles"]] == [
        ("parts.bin", len(data))
    ]


def test_cancel_and_containers_labelled_then_removed_on_stop(
    base_image: str, tmp_path: Path
) -> None:
    sim = KaggleSim(
        image=base_image, runtime="docker", queue_seconds=0, grace_seconds=2, data_dir=tmp_path
    )
    with sim:
        rpc = Rpc(sim.url, prefix="/v1")  # PROD-style paths answer too
        push(rpc, "to-cancel", "import time\nprint('x', flush=True)\ntime.sleep(120)\n")
        push(rpc, "left-running", "import time\nprint('y', flush=True)\ntime.sleep(120)\n")
        wait_log(sim, "to-cancel", "x\n")
        wait_log(sim, "left-running", "y\n")
        labelled = ["docker", "ps", "-q", "--filter", f"label=launch.sim.instance={sim.instance}"]
        running = subprocess.run(labelled, capture_output=True, text=True).stdout.split()
        assert len(running) == 2
        kind = subprocess.run(
            ["docker", "inspect", "-f", '{{index .Config.Labels "launch.sim"}}', running[0]],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        assert kind == "kaggle"
        sid = sim.latest_session(USER, "to-cancel").id
        assert rpc(f"{KERNELS}/CancelKernelSession", {"kernelSessionId": sid}) == {}
        assert sim.wait(USER, "to-cancel").status == "CANCEL_ACKNOWLEDGED"
    after = subprocess.run(labelled + ["-a"], capture_output=True, text=True).stdout.split()
    assert after == []


def test_auth_paths_and_absolute_form_requests(sim: KaggleSim) -> None:
    quota = f"{KERNELS}/GetAcceleratorQuotaStatistics"
    assert Rpc(sim.url).raw(quota, auth=None)[0] == 401
    bad = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    assert Rpc(sim.url).raw(quota, auth=bad)[0] == 401
    assert Rpc(sim.url, "/v1").raw(quota)[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request(  # what a client sends through HTTP_PROXY
        "POST", f"http://localhost/api/v1/{quota}", body=b"{}", headers={"Authorization": AUTH}
    )
    r = conn.getresponse()
    assert r.status == 200 and "gpuQuota" in json.loads(r.read())
    code, _, body = Rpc(sim.url).raw("kernels.KernelsApiService/NoSuchRpc")
    assert code == 404 and body["code"] == 404


def test_process_runtime_runs_a_kernel_without_docker(tmp_path: Path) -> None:
    with KaggleSim(runtime="process", queue_seconds=0, data_dir=tmp_path) as sim:
        rpc = Rpc(sim.url)
        blob = rpc("blobs.BlobApiService/StartBlobUpload", {"name": "n.txt", "contentLength": 2})
        assert put(blob["createUrl"], b"42", {})[0] == 200
        rpc(
            "datasets.DatasetApiService/CreateDataset",
            {"ownerSlug": USER, "slug": "numbers", "title": "numbers", "licenseName": "CC0-1.0",
             "files": [{"token": blob["token"]}]},
        )  # fmt: skip
        code = (
            "import os, pathlib\n"
            "root = pathlib.Path(os.environ['KAGGLE_SIM_ROOT'])\n"
            "n = int((root / 'input/numbers/n.txt').read_text())\n"
            "pathlib.Path('double.txt').write_text(str(2 * n))\n"
        )
        push(rpc, "doubler", code, datasetDataSources=[f"{USER}/numbers"])
        assert sim.wait(USER, "doubler").status == "COMPLETE"
        assert outputs(rpc, "doubler") == {"double.txt": b"84"}


def test_kernels_read_their_owners_secrets_with_the_kaggle_secrets_client(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    sim.set_secret("HF_TOKEN", "hf_not_a_real_token")
    code = (
        "from kaggle_secrets import BackendError, UserSecretsClient\n"
        "client = UserSecretsClient()\n"
        "ok = client.get_secret('HF_TOKEN') == 'hf_not_a_real_token'\n"
        "try:\n"
        "    client.get_secret('NEVER_ADDED')\n"
        "    missing = 'returned'\n"
        "except BackendError:\n"
        "    missing = 'raised'\n"
        "open('/kaggle/working/check.txt', 'w').write(f'{ok} {missing}')\n"
    )
    push(rpc, "reads-secret", code)
    s = sim.wait(USER, "reads-secret")
    assert s.status == "COMPLETE", s.log
    assert outputs(rpc, "reads-secret") == {"check.txt": b"True raised"}


def test_states_go_queued_running_complete(base_image: str, tmp_path: Path) -> None:
    with KaggleSim(image=base_image, runtime="docker", queue_seconds=1, data_dir=tmp_path) as sim:
        rpc = Rpc(sim.url)
        answer = push(rpc, "stages", "import time\nprint('in', flush=True)\ntime.sleep(1)\n")
        assert answer["versionNumber"] == 1 and answer["ref"] == f"/code/{USER}/stages"
        assert status(rpc, "stages") == {"status": "QUEUED"}
        wait_log(sim, "stages", "in\n")
        assert status(rpc, "stages") == {"status": "RUNNING"}
        assert outputs(rpc, "stages") == {}  # /kaggle/working is saved when the session ends
        sim.wait(USER, "stages")
        assert status(rpc, "stages") == {"status": "COMPLETE"}
        assert push(rpc, "stages", "print(2)\n")["versionNumber"] == 2
        sim.wait(USER, "stages")
        first = rpc(
            f"{KERNELS}/GetKernelSessionStatus",
            {"userName": USER, "kernelSlug": "stages", "versionLabel": "v1"},
        )
        assert first == {"status": "COMPLETE"}


def test_internet_off_means_no_network_in_the_container(sim: KaggleSim) -> None:
    rpc = Rpc(sim.url)
    code = "import os\nprint(sorted(os.listdir('/sys/class/net')))\n"
    push(rpc, "offline", code, enableInternet=False)
    push(rpc, "online", code, enableInternet=True)
    offline, online = sim.wait(USER, "offline"), sim.wait(USER, "online")
    assert [e["data"] for e in offline.log] == ["['lo']\n"]
    assert "eth0" in online.log[0]["data"]


def test_process_runtime_enforces_the_session_cap_with_sigterm(tmp_path: Path) -> None:
    with KaggleSim(runtime="process", queue_seconds=0, grace_seconds=5, data_dir=tmp_path) as sim:
        rpc = Rpc(sim.url)
        code = (
            "import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path('saved').write_text('1'), sys.exit(0)))\n"
            "print('up', flush=True)\n"
            "time.sleep(120)\n"
        )
        push(rpc, "proc-capped", code, sessionTimeoutSeconds=600)
        wait_log(sim, "proc-capped", "up\n")
        sim.set_session_seconds(0)
        s = sim.wait(USER, "proc-capped", timeout=30)
        assert s.status == "ERROR" and "timed out" in (s.failure_message or "")
        assert outputs(rpc, "proc-capped") == {"saved": b"1"}
