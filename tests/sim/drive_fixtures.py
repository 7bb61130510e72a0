"""Fixtures and helpers shared by the Drive emulator tests (imported by tests/sim/test_drive_*).

Every test gets its own ``DriveSim`` on 127.0.0.1 (it starts in milliseconds) and real HTTP.
``pydrive2.auth.build`` is restored after each test that points pydrive2 at a sim.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from launcher.sim.drive import DriveSim
from launcher.sim.drive.sim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[DriveSim]:
    with DriveSim(data_dir=tmp_path / "drive-sim") as s:
        yield s


@pytest.fixture
def pointed(sim: DriveSim, monkeypatch: pytest.MonkeyPatch) -> DriveSim:
    """The sim, with pydrive2 pointed at it (and put back afterwards)."""
    import pydrive2.auth

    from launcher.targets.colab.endpoint import point_pydrive2_at

    monkeypatch.setattr(pydrive2.auth, "build", pydrive2.auth.build)
    monkeypatch.setenv("GDRIVE_NON_INTERACTIVE", "1")  # a failed refresh never opens a browser
    point_pydrive2_at(sim.url)
    return sim


def client_settings(sim: DriveSim, creds_file: Path) -> dict[str, Any]:
    """pydrive2 settings for an installed-app client whose credentials are saved in a file."""
    return {
        "client_config_backend": "settings",
        "client_config": {
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "auth_uri": f"{sim.url}/o/oauth2/auth",
            "token_uri": f"{sim.url}/token",
            "revoke_uri": f"{sim.url}/revoke",
            "redirect_uri": "http://localhost:8080/",
        },
        "save_credentials": True,
        "save_credentials_backend": "file",
        "save_credentials_file": str(creds_file),
        "oauth_scope": ["https://www.googleapis.com/auth/drive"],
    }


def call(
    sim: DriveSim,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    token: str | None = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request (no redirects followed): (status, lower-cased headers, body).
    ``token`` "" means a fresh token of the default user; None sends no Authorization."""
    parts = urlsplit(path if path.startswith("http") else sim.url + path)
    sent = dict(headers or {})
    if token == "":
        token = sim.access_token()
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if isinstance(body, dict):
        sent.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def call_json(
    sim: DriveSim, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    status, _, data = call(sim, method, path, body, **kw)
    return status, json.loads(data) if data else None


def reason(answer: Any) -> str:
    """The first error reason of a Drive error body."""
    return str(answer["error"]["errors"][0]["reason"])
