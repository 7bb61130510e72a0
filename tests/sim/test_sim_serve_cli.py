"""`launch sim serve NAME` runs an emulator in the foreground and prints its URL once it answers."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

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


def test_sim_serve_drive_prints_url_and_exports_keeps_contents_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """No engine needed. The URL is stdout's first line, the exports go to stderr, a consent +
    code exchange + upload works against it, the content lands under --state-dir, and SIGTERM
    ends it with status 0."""
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [*launch_cmd(), "sim", "serve", "drive", "--port", "0", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (
            url,
            proc.stderr.read() if proc.poll() else "",
        )
        exports = [proc.stderr.readline().strip() for _ in range(3)]
        assert exports == [
            "# launch:",
            f"export LAUNCH_DRIVE_URL={url} "
            "LAUNCH_COLAB_CLIENT_ID=launch-sim.apps.googleusercontent.com "
            "LAUNCH_COLAB_CLIENT_SECRET=launch-sim-secret",
            "# then: launch auth colab (the emulator consents as alice@example.com at once)",
        ]
        query = urlencode({"client_id": "launch-sim.apps.googleusercontent.com",
                           "redirect_uri": "http://localhost:1/", "response_type": "code"})  # fmt: skip
        conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
        conn.request("GET", f"/o/oauth2/auth?{query}")
        location = conn.getresponse().getheader("Location") or ""
        code = parse_qs(urlsplit(location).query)["code"][0]
        form = urlencode({"grant_type": "authorization_code", "code": code,
                          "redirect_uri": "http://localhost:1/",
                          "client_id": "launch-sim.apps.googleusercontent.com",
                          "client_secret": "launch-sim-secret"}).encode()  # fmt: skip
        with urllib.request.urlopen(f"{url}/token", form, timeout=10) as resp:
            token = json.loads(resp.read())["access_token"]
        put = urllib.request.Request(
            f"{url}/upload/drive/v2/files?uploadType=media", b"kept", method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        )  # fmt: skip
        with urllib.request.urlopen(put, timeout=10) as resp:
            file_id = json.loads(resp.read())["id"]
        assert (state / "blobs" / file_id).read_bytes() == b"kept"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0


def test_sim_serve_colab_needs_a_drive_prints_its_url_and_stops_on_sigterm() -> None:
    from launcher.sim.drive import DriveSim

    missing = subprocess.run(
        [*launch_cmd(), "sim", "serve", "colab"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "needs --drive-url" in missing.stderr
    with DriveSim() as drive:
        proc = subprocess.Popen(
            [*launch_cmd(), "sim", "serve", "colab", "--drive-url", drive.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_signals,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stderr is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() else ""
            assert proc.stderr.readline().startswith("# launch")
            assert proc.stderr.readline().strip() == f"export LAUNCH_COLAB_URL={url}"
            with urllib.request.urlopen(f"{url}/_sim/sessions", timeout=10) as resp:
                assert json.loads(resp.read()) == []
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
    assert rc == 0
