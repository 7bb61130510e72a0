"""`launch sim serve NAME` runs an emulator in the foreground and prints its URL once it answers."""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.conftest import default_signals, launch_cmd


@pytest.mark.parametrize(
    ("platform", "probe"),
    [("vast", "/api/v0/gpu_names/unique/"), ("kaggle", "/_emu/health")],
)
def test_sim_serve_prints_a_url_that_answers(
    platform: str, probe: str, docker_engine: None
) -> None:
    proc = subprocess.Popen(
        [*launch_cmd(), "sim", "serve", platform, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (
            url,
            proc.stderr.read() if proc.poll() else "",
        )
        try:
            with urllib.request.urlopen(url + probe, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code  # an auth error is an answer too: the emulator is up
        assert status in (200, 401, 405)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
