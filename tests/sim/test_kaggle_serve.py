"""`python -m launcher.sim.kaggle` in the foreground: URL once ready, HTTP knobs, clean stop."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from launcher.sim.kaggle import KaggleSim
from tests.conftest import default_signals

REPO = Path(__file__).resolve().parents[2]
AUTH = "Basic " + base64.b64encode(b"bob:s3cret").decode()


def post(url: str, body: dict[str, Any], auth: str | None = AUTH) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_foreground_server_prints_url_takes_knobs_and_stops_on_sigint(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.sim.kaggle", "--port", "0", "--user", "bob:s3cret",
         "--runtime", "process", "--queue-seconds", "0", "--data-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=default_signals,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        with urllib.request.urlopen(f"{url}/_emu/health", timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True}
        post(f"{url}/_emu/control/reject-push", {"message": "no GPUs today"}, auth=None)
        save = f"{url}/api/v1/kernels.KernelsApiService/SaveKernel"
        body = {"slug": "bob/nb", "text": "print(1)", "language": "python", "kernelType": "script"}
        assert post(save, body) == {"error": "no GPUs today"}
        assert post(save, body)["versionNumber"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_notebook_kernel_runs_its_code_cells(tmp_path: Path) -> None:
    nb = {
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {"cell_type": "markdown", "source": "# title"},
            {"cell_type": "code", "source": ["x = 20\n", "%matplotlib inline\n"]},
            {"cell_type": "code", "source": "open('nb.txt', 'w').write(str(x + 22))"},
        ],
    }
    with KaggleSim(
        runtime="process", queue_seconds=0, data_dir=tmp_path, users={"bob": "s3cret"}
    ) as sim:
        post(
            f"{sim.url}/v1/kernels.KernelsApiService/SaveKernel",
            {
                "slug": "bob/nb",
                "text": json.dumps(nb),
                "language": "python",
                "kernelType": "notebook",
            },
        )
        s = sim.wait("bob", "nb")
        assert s.status == "COMPLETE", s.log
        assert (s.working / "nb.txt").read_text() == "42"


def test_missing_image_ends_in_error_that_says_why(base_image: str, tmp_path: Path) -> None:
    image = "launch-sim-no-such-image:never"
    with KaggleSim(
        image=image, runtime="docker", queue_seconds=0, data_dir=tmp_path, users={"bob": "s3cret"}
    ) as sim:
        post(
            f"{sim.url}/v1/kernels.KernelsApiService/SaveKernel",
            {
                "slug": "bob/noimg",
                "text": "print(1)",
                "language": "python",
                "kernelType": "script",
            },
        )
        t0 = time.time()
        s = sim.wait("bob", "noimg", timeout=60)
        assert time.time() - t0 < 60
        assert s.status == "ERROR"
        assert "docker could not start the kernel" in (s.failure_message or ""), s.log
