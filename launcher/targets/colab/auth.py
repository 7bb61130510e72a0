"""`launch auth colab`: the user's consent to Drive access, once, stored 0600 for later runs.

Google's installed-app flow through pydrive2 (its `GetAuthUrl` / `Authenticate`): the consent page
opens in a browser and redirects to a loopback server here with the code; without a browser, the
user opens the printed link anywhere and pastes the address it ends on (or just the code). The
refresh token is written to `$LAUNCH_HOME/colab/credentials.json` with mode 0600, never printed.

It needs an OAuth client of type "Desktop app" (Google Cloud console -> APIs & Services ->
Credentials, with the Drive API enabled): its JSON file (`--client-secrets`), or
LAUNCH_COLAB_CLIENT_ID / LAUNCH_COLAB_CLIENT_SECRET. A service account key is refused: it cannot
own files in a personal Drive. With LAUNCH_DRIVE_URL (the emulator), its consent and token
endpoints are used.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from launcher.errors import TargetUnavailableError
from launcher.sync import atomic_write_text
from launcher.targets.colab.drive import INSTALL_HINT, credentials_path, pydrive2_installed
from launcher.targets.colab.endpoint import drive_url

SCOPE = "https://www.googleapis.com/auth/drive"  # Colab's notebook writes files we must read
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLIENT_HINT = (
    "create an OAuth client of type Desktop app (console.cloud.google.com -> APIs & Services -> "
    "Credentials; enable the Google Drive API), then `launch auth colab --client-secrets "
    "client_secret.json`, or set LAUNCH_COLAB_CLIENT_ID and LAUNCH_COLAB_CLIENT_SECRET"
)


def client_config(client_secrets: Path | None) -> dict[str, str]:
    """client_id, client_secret, auth_uri, token_uri: from Google's client JSON or the env."""
    info: dict[str, Any] = {}
    if client_secrets is not None:
        try:
            data: Any = json.loads(client_secrets.read_text())
        except (OSError, ValueError) as e:
            raise TargetUnavailableError(
                f"cannot read {client_secrets}: {e}", hint=CLIENT_HINT
            ) from e
        if not isinstance(data, dict):
            raise TargetUnavailableError(
                f"{client_secrets} is not a client file", hint=CLIENT_HINT
            )
        blob: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
        if blob.get("type") == "service_account":
            raise TargetUnavailableError(
                f"{client_secrets} is a service account key: a service account cannot own "
                "files in a personal Drive (Google gives it no storage quota), and Colab runs "
                "notebooks as you",
                hint=CLIENT_HINT,
            )
        info = blob.get("installed") or blob.get("web") or {}
    cid = str(info.get("client_id") or os.environ.get("LAUNCH_COLAB_CLIENT_ID") or "")
    secret = str(info.get("client_secret") or os.environ.get("LAUNCH_COLAB_CLIENT_SECRET") or "")
    if not cid or not secret:
        raise TargetUnavailableError(
            "no Google OAuth client to ask for Drive access with", hint=CLIENT_HINT
        )
    url = drive_url()
    return {
        "client_id": cid,
        "client_secret": secret,
        "auth_uri": f"{url}/o/oauth2/auth"
        if url
        else str(info.get("auth_uri") or GOOGLE_AUTH_URI),
        "token_uri": f"{url}/token" if url else str(info.get("token_uri") or GOOGLE_TOKEN_URI),
    }


class _Catch(BaseHTTPRequestHandler):
    """The loopback redirect: takes the code (or the error) off the consent's redirect."""

    got: dict[str, str]
    done: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.end_headers()
            return
        for key in ("code", "error", "state"):
            if key in query:
                self.got[key] = query[key][0]
        ok = "code" in query
        page = "Drive access granted to launch; you can close this tab." if ok else "Refused."
        body = f"<html><body>{page}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.done.set()


def _param(url: str, name: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url.strip()).query).get(name, [""])[0]


def _code_from(text: str) -> str:
    """The code from a pasted redirect address, or the pasted code itself."""
    return _param(text, "code") if "code=" in text else text.strip()


def authorize(
    home: Path,
    *,
    client_secrets: Path | None,
    browser: bool,
    say: Callable[[str], None],
    ask: Callable[[str], str],
    port: int = 0,
    wait_s: float = 300.0,
) -> Path:
    """Run the consent flow and store the credentials; their path."""
    if not pydrive2_installed():
        raise TargetUnavailableError("launch auth colab needs pydrive2", hint=INSTALL_HINT)
    from pydrive2.auth import GoogleAuth  # pyright: ignore[reportMissingTypeStubs]

    config = client_config(client_secrets)
    done = threading.Event()
    got: dict[str, str] = {}
    handler = type("Catch", (_Catch,), {"got": got, "done": done})
    server = HTTPServer(("127.0.0.1", port), handler)
    redirect = f"http://127.0.0.1:{server.server_address[1]}/"
    settings = {
        "client_config_backend": "settings",
        "client_config": dict(config, redirect_uri=redirect, revoke_uri=None),
        "oauth_scope": [SCOPE],
        "get_refresh_token": True,
        "save_credentials": False,
    }
    gauth: Any = GoogleAuth(settings=settings)
    gauth.GetFlow()
    state = secrets.token_urlsafe(16)  # the redirect must carry it back: not a forged code
    gauth.flow.params["state"] = state
    url = str(gauth.GetAuthUrl())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if browser:
            import webbrowser

            say(f"opening Google's consent page; if no browser opens, visit:\n  {url}")
            webbrowser.open(url, new=2)
            if not done.wait(wait_s):
                raise TargetUnavailableError(
                    "no answer from the consent page in time",
                    hint="run it again with --no-browser",
                )
        else:
            say(
                f"open this link in any browser, allow Drive access, then paste here the "
                f"address the browser ends on (it starts with {redirect}):\n  {url}"
            )
            pasted = ask("address or code")
            if not done.is_set():
                got["code"] = _code_from(pasted)
                # a bare code was copied by the user from the page itself: nothing to check
                got["state"] = _param(pasted, "state") if "state=" in pasted else state
    finally:
        server.shutdown()
        server.server_close()
    if "error" in got or not got.get("code"):
        raise TargetUnavailableError(
            f"Google did not grant Drive access ({got.get('error', 'no code')})"
        )
    if got.get("state") != state:
        raise TargetUnavailableError(
            "the consent answer is not the one this command asked for (its state differs)",
            hint="run `launch auth colab` again and use the link it prints",
        )
    try:
        gauth.Authenticate(got["code"])
    except Exception as e:  # noqa: BLE001 - pydrive2's AuthenticationError, oauth2client's own
        raise TargetUnavailableError(
            f"Google did not accept the code: {e}", hint="run `launch auth colab` again"
        ) from e
    path = credentials_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(path, str(gauth.credentials.to_json()))
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` so that only the user can read it, from the first byte on."""
    old = os.umask(0o077)
    try:
        atomic_write_text(path, text)
    finally:
        os.umask(old)
    path.chmod(0o600)
