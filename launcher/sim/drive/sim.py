"""`DriveSim`: the emulator as an object (tests) and `serve()` (the foreground command)."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from launcher.sim.drive.api import DriveApi
from launcher.sim.drive.auth import (
    DRIVE_SCOPE,
    TOKEN_SECONDS,
    Auth,
    Principal,
    new_service_account_key,
)
from launcher.sim.drive.faults import Faults
from launcher.sim.drive.server import Backend, handler_class
from launcher.sim.drive.store import FOLDER_MIME, FileMeta, Store
from launcher.sim.drive.uploads import Sessions

DEFAULT_USER = "alice@example.com"
DEFAULT_CLIENT_ID = "launch-sim.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "launch-sim-secret"
COLAB_MIME = "application/vnd.google.colaboratory"
SERVICE_ACCOUNT_PROJECT = "launch-sim"
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # oauth2client's

__all__ = [
    "COLAB_MIME",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_USER",
    "FOLDER_MIME",
    "DriveSim",
    "FileMeta",
    "serve",
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when many clients arrive at once


class DriveSim:
    """A Google Drive v2 emulator on 127.0.0.1 that the unchanged pydrive2 talks to.

    Point pydrive2 at ``url`` with ``launcher.targets.colab.endpoint.point_pydrive2_at``; the
    credentials come from ``user_credentials`` (OAuth, a saved-credentials file) or
    ``service_account_key``. Contents live under ``data_dir`` (a temporary folder, removed on
    ``stop``, when None); metadata and tokens live in memory.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 data_dir: Path | None = None) -> None:  # fmt: skip
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the Drive sim listens on the loopback interface only")
        self.host, self.port = host, port
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="drive-sim-"))
        self.store = Store(self.data_dir)
        self.auth = Auth({DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}, DEFAULT_USER)
        self.faults = Faults()
        self._base_url = ""
        api = DriveApi(self.store, Sessions(self.store.spool_dir), lambda: self._base_url)
        self.backend = Backend(api=api, auth=self.auth, faults=self.faults)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sim is not started")
        return self._base_url

    @property
    def calls(self) -> list[str]:
        """Every request seen, as "VERB /path"."""
        return self.backend.calls

    def start(self) -> Self:
        httpd = _Server((self.host, self.port), handler_class(self.backend))
        self._httpd = httpd
        self.port = httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{self.port}"
        self.auth.token_uri = f"{self._base_url}/token"
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.1,), name="drive-sim", daemon=True
        )  # a short poll interval: stop() returns within 0.1 s
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- credentials ------------------------------------------------------------------------

    def user_credentials(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        """What pydrive2's ``SaveCredentialsFile`` writes for ``user`` after consenting to
        DEFAULT_CLIENT_ID: an oauth2client ``OAuth2Credentials`` JSON with a refresh token
        this sim accepts and an access token good for an hour."""
        refresh = self.auth.issue_refresh(user, DEFAULT_CLIENT_ID)
        access = self.access_token(user)
        expiry = datetime.now(UTC) + timedelta(seconds=TOKEN_SECONDS)
        return {
            "access_token": access,
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "refresh_token": refresh,
            "token_expiry": expiry.strftime(EXPIRY_FORMAT),
            "token_uri": f"{self.url}/token",
            "user_agent": None,
            "revoke_uri": f"{self.url}/revoke",
            "id_token": None,
            "id_token_jwt": None,
            "token_response": {
                "access_token": access,
                "expires_in": TOKEN_SECONDS,
                "refresh_token": refresh,
                "scope": DRIVE_SCOPE,
                "token_type": "Bearer",
            },
            "scopes": [DRIVE_SCOPE],
            "token_info_uri": f"{self.url}/tokeninfo",
            "invalid": False,
            "_class": "OAuth2Credentials",
            "_module": "oauth2client.client",
        }

    def access_token(self, user: str = DEFAULT_USER) -> str:
        """A bearer token for ``user``, good for an hour."""
        return self.auth.issue_access(Principal(user))

    def service_account_key(self) -> dict[str, Any]:
        """A new service account's key JSON (fresh RSA key; ``token_uri`` is this sim's)."""
        key, public_pem = new_service_account_key(SERVICE_ACCOUNT_PROJECT, f"{self.url}/token")
        self.auth.register_service_account(key["client_email"], public_pem)
        return key

    def expire_access_tokens(self, user: str | None = None) -> None:
        """End ``user``'s access tokens now (everyone's when None): the next API call answers
        401 and a client with a refresh token gets a new one from ``/token``."""
        self.auth.expire(user)

    # -- inspection -------------------------------------------------------------------------

    def files(self, *, trashed: bool | None = None) -> list[FileMeta]:
        """Every user's files and folders (not the My Drive roots), in creation order."""
        return [f for f in self.store.all_files() if trashed is None or f.trashed == trashed]

    def content(self, file_id: str) -> bytes:
        return self.store.content(file_id)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None],
    stop_event: threading.Event | None = None,
    data_dir: Path | None = None,
) -> None:
    """Run the sim in the foreground until SIGINT/SIGTERM (or ``stop_event``); calls
    ``on_ready(url)`` once it answers."""
    stop = stop_event or threading.Event()
    sim = DriveSim(host=host, port=port, data_dir=data_dir).start()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _sig, _frame: stop.set())
    try:
        on_ready(sim.url)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
