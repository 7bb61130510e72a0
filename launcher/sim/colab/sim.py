"""`ColabSim`: a Colab runtime that really executes the notebooks `launch` puts in Drive.

"The user opens the link" is a GET of `<url>/drive/<notebook file id>` (the link the launcher
prints, with LAUNCH_COLAB_URL pointing here) or `POST /_sim/open/<id>`; with ``auto_open`` the sim
opens every new Colab notebook in Drive by itself, as a user who clicks at once. Each session:

- downloads the notebook from the Drive emulator and runs all its cells with nbclient in a real
  IPython kernel (``python``: an interpreter with ipykernel and what the jobs need), in a folder
  of its own that stands for /content (COLAB_SIM_ROOT);
- has the `google.colab` stand-in (runtime/google/colab) on its path: `drive.mount` mirrors the
  emulated My Drive both ways, `userdata.get` reads ``secrets`` (the user's Secrets panel);
- ends like a Colab VM: at its cap (``session_seconds``), when idle past ``idle_seconds`` (no
  `POST /_sim/sessions/<id>/touch`), or on `POST /_sim/sessions/<id>/disconnect`; the kernel and
  every process it started are killed at once.

The consent to Drive access (Colab's own, per session) is the Drive emulator's OAuth flow, done
once by the sim as ``user``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

RUNTIME_PATH = Path(__file__).parent / "runtime"
NOTEBOOK_MIME = "application/vnd.google.colaboratory"
DEFAULT_CLIENT = ("launch-sim.apps.googleusercontent.com", "launch-sim-secret")


class DriveToken:
    """A Drive access token for one user of the Drive emulator, through its OAuth consent."""

    def __init__(self, drive_url: str, user: str, client: tuple[str, str] = DEFAULT_CLIENT):
        self.drive_url, self.user, self.client = drive_url.rstrip("/"), user, client
        self._token, self._until, self._refresh = "", 0.0, ""
        self._lock = threading.Lock()

    def _post_token(self, form: dict[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(f"{self.drive_url}/token", data=body, timeout=30) as r:
            return json.loads(r.read())

    def _consent(self) -> str:
        redirect = "http://127.0.0.1/colab-sim"
        query = urllib.parse.urlencode(
            {
                "client_id": self.client[0],
                "redirect_uri": redirect,
                "response_type": "code",
                "scope": "https://www.googleapis.com/auth/drive",
                "state": "colab-sim",
                "login_hint": self.user,
            }
        )
        parts = urllib.parse.urlsplit(self.drive_url)
        conn = http.client.HTTPConnection(parts.netloc, timeout=30)
        try:  # the consent answers with a redirect to the app, carrying the code
            conn.request("GET", f"{parts.path}/o/oauth2/auth?{query}")
            resp = conn.getresponse()
            location = resp.getheader("Location") or ""
        finally:
            conn.close()
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("code", [""])[0]
        if not code:
            raise RuntimeError(f"the Drive emulator gave no consent code ({resp.status})")
        return code

    def __call__(self) -> str:
        with self._lock:
            if self._token and time.time() < self._until - 60:
                return self._token
            cid, secret = self.client
            if self._refresh:
                form = {"grant_type": "refresh_token", "refresh_token": self._refresh}
            else:
                form = {
                    "grant_type": "authorization_code",
                    "code": self._consent(),
                    "redirect_uri": "http://127.0.0.1/colab-sim",
                }
            got = self._post_token(dict(form, client_id=cid, client_secret=secret))
            self._token = str(got["access_token"])
            self._refresh = str(got.get("refresh_token") or self._refresh)
            self._until = time.time() + float(got.get("expires_in") or 3600)
            return self._token


@dataclass
class SessionInfo:
    id: str
    notebook_id: str
    folder: str
    opened_at: float
    state: str = "running"  # running | finished | failed | disconnected
    ended_at: float | None = None
    reason: str = ""  # why it ended: "", an error, "disconnected", "session cap", "idle"
    touched_at: float = field(default_factory=time.time)


class ColabSim:
    def __init__(
        self,
        *,
        drive_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "alice@example.com",
        python: str | None = None,
        data_dir: Path | None = None,
        session_seconds: float = 12 * 3600,
        idle_seconds: float | None = None,
        sync_seconds: float = 1.0,
        secrets: dict[str, str | None] | None = None,
        auto_open: bool = False,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the Colab sim listens on the loopback interface only")
        self.host, self.port = host, port
        self.drive_url = drive_url.rstrip("/")
        self.token = DriveToken(self.drive_url, user)
        import sys

        self.python = python or sys.executable
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="colab-sim-"))
        self.session_seconds = session_seconds
        self.idle_seconds = idle_seconds
        self.sync_seconds = sync_seconds
        self.secrets: dict[str, str | None] = dict(secrets or {})
        self.auto_open = auto_open
        self.sessions: dict[str, SessionInfo] = {}
        self._runners: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.url = ""

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        for target in (self._server.serve_forever, self._watch):
            t = threading.Thread(target=target, daemon=True, name="colab-sim")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for sid in list(self.sessions):
            self.disconnect(sid, "the sim stopped")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- sessions ---------------------------------------------------------------------------

    def open(self, notebook_id: str) -> SessionInfo:
        """The user opens the notebook's link and runs all its cells. A notebook in Drive's
        trash (its run ended) does not open: LookupError."""
        from launcher.sim.colab.runner import Runner

        if self._trashed(notebook_id):
            raise LookupError(f"notebook {notebook_id} is in Drive's trash")

        with self._lock:
            sid = f"s{len(self.sessions) + 1}"
            folder = self.data_dir / sid
            info = SessionInfo(id=sid, notebook_id=notebook_id, folder=str(folder), opened_at=0)
            info.opened_at = time.time()
            self.sessions[sid] = info
        secrets_file = folder / "secrets.json"
        folder.mkdir(parents=True, exist_ok=True)
        secrets_file.write_text(json.dumps(self.secrets))
        secrets_file.chmod(0o600)
        runner = Runner(self, info, secrets_file)
        self._runners[sid] = runner
        runner.start()
        return info

    def disconnect(self, sid: str, reason: str = "disconnected") -> None:
        runner = self._runners.get(sid)
        if runner is not None:
            runner.kill(reason)

    def touch(self, sid: str) -> None:
        self.sessions[sid].touched_at = time.time()

    def wait(self, sid: str, timeout: float) -> SessionInfo:
        deadline = time.monotonic() + timeout
        while self.sessions[sid].state == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.sessions[sid]

    def _watch(self) -> None:
        opened: set[str] = set()
        while not self._stop.wait(0.5):
            now = time.time()
            for info in list(self.sessions.values()):
                if info.state != "running":
                    continue
                if now - info.opened_at > self.session_seconds:
                    self.disconnect(info.id, "session cap")
                elif self.idle_seconds is not None and now - info.touched_at > self.idle_seconds:
                    self.disconnect(info.id, "idle")
            if self.auto_open:
                try:
                    for nb in self._notebooks():
                        if nb not in opened:
                            opened.add(nb)
                            self.open(nb)
                except LookupError:
                    pass  # trashed between the listing and the click
                except OSError as e:
                    print(f"colab sim: cannot list notebooks in Drive: {e}", flush=True)

    def _notebooks(self) -> list[str]:
        q = urllib.parse.quote(f"mimeType = '{NOTEBOOK_MIME}' and trashed = false")
        req = urllib.request.Request(f"{self.drive_url}/drive/v2/files?q={q}&maxResults=1000")
        req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=30) as r:
            items: list[dict[str, Any]] = json.loads(r.read()).get("items", [])
        return [str(i["id"]) for i in items]

    def _trashed(self, notebook_id: str) -> bool:
        req = urllib.request.Request(f"{self.drive_url}/drive/v2/files/{notebook_id}")
        req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                meta: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return True
            raise
        labels: dict[str, Any] = meta.get("labels") or {}
        return bool(labels.get("trashed"))

    def notebook_text(self, notebook_id: str) -> str:
        req = urllib.request.Request(f"{self.drive_url}/drive/v2/files/{notebook_id}?alt=media")
        req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read().decode()

    def kernel_env(self, info: SessionInfo, secrets_file: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_", "COLAB_"))}
        env.pop("XDG_CACHE_HOME", None)
        root = Path(info.folder) / "content"
        root.mkdir(parents=True, exist_ok=True)
        home = Path(info.folder) / "root"  # a session is a fresh VM: its own home and caches
        home.mkdir(parents=True, exist_ok=True)
        bindir = str(Path(self.python).parent)
        path = os.pathsep.join(p for p in (str(RUNTIME_PATH), env.get("PYTHONPATH", "")) if p)
        env.update(
            HOME=str(home),
            PYTHONPATH=path,
            PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
            COLAB_SIM_ROOT=str(root),
            COLAB_SIM_DRIVE_URL=self.drive_url,
            COLAB_SIM_TOKEN_URL=f"{self.url}/_sim/token",
            COLAB_SIM_SYNC_S=str(self.sync_seconds),
            COLAB_SIM_SECRETS=str(secrets_file),
            # its VM's start: a session here shares this host's /proc/uptime
            COLAB_SIM_SESSION_START=str(info.opened_at),
            COLAB_RELEASE_TAG="launch-sim",
        )
        return env

    def describe(self) -> list[dict[str, Any]]:
        return [vars(s).copy() for s in self.sessions.values()]


def _handler(sim: ColabSim) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/drive/"):
                try:
                    info = sim.open(path[len("/drive/") :])
                except LookupError as e:
                    self._send(404, f"<html><body>Colab sim: {e}</body></html>", "text/html")
                    return
                page = f"<html><body>Colab sim: session {info.id} runs notebook "
                self._send(200, page + f"{info.notebook_id}</body></html>", "text/html")
            elif path == "/_sim/sessions":
                self._send(200, sim.describe())
            elif path == "/_sim/token":
                self._send(200, sim.token(), "text/plain")
            else:
                self._send(404, {"error": f"no route {path}"})

        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
            if parts[:2] == ["_sim", "open"] and len(parts) == 3:
                self._send(200, vars(sim.open(parts[2])))
            elif (
                parts[:2] == ["_sim", "sessions"] and len(parts) == 4 and parts[2] in sim.sessions
            ):
                if parts[3] == "disconnect":
                    sim.disconnect(parts[2])
                elif parts[3] == "touch":
                    sim.touch(parts[2])
                self._send(200, vars(sim.sessions[parts[2]]))
            else:
                self._send(404, {"error": f"no route {self.path}"})

    return Handler


def serve(
    host: str, port: int, on_ready: Callable[[str], None], **options: Any
) -> None:  # pragma: no cover - the foreground command; tests use ColabSim
    """Run until SIGINT or SIGTERM; every session is disconnected on the way out."""
    sim = ColabSim(host=host, port=port, **options).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: done.set())
    on_ready(sim.url)
    try:
        done.wait()
    finally:
        sim.stop()
