"""HTTP front of the Drive sim: routing, bearer auth, injected failures, streaming.

Routes (reference §3.3, §3.5), everything under the discovery document's ``rootUrl``:

- ``/drive/v2/about``, ``/drive/v2/files[/{id}[/trash|/untrash]]``: the API (``Bearer`` token).
- ``/upload/drive/v2/files[/{id}]?uploadType=media|multipart|resumable``: uploads; the session
  URL is the same path with ``&upload_id=``, and like Google's it needs no token.
- ``/o/oauth2/auth``, ``/token``, ``/revoke``, ``/tokeninfo``: OAuth (auth.py).
- ``/_sim/health``; ``POST /_sim/faults`` with ``Faults.add``'s keywords as JSON: for other
  processes (``launch sim serve drive``).

HTTP/1.0, one request a connection: simple to stop, and httplib2 does not mind.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from launcher.sim.drive.api import DriveApi, Params, Reply, parse_json
from launcher.sim.drive.auth import Auth, Principal, TokenError
from launcher.sim.drive.faults import Faults
from launcher.sim.drive.store import CHUNK, DriveError
from launcher.sim.drive.uploads import Body

_FILE = re.compile(r"/drive/v2/files/([^/]+)(?:/(trash|untrash))?")
_UPLOAD = re.compile(r"/(?:resumable/)?upload/drive/v2/files(?:/([^/]+))?")


@dataclass
class Backend:
    api: DriveApi
    auth: Auth
    faults: Faults
    calls: list[str] = field(default_factory=list[str])  # "VERB /path" as requested


def _unauthorized() -> DriveError:
    return DriveError(
        401, "authError", "Invalid Credentials", location="Authorization",
        location_type="header",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                 'error="invalid_token"'},
    )  # fmt: skip


class DriveHandler(BaseHTTPRequestHandler):
    backend: Backend  # set on a subclass by handler_class
    server_version = "drive-sim"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are recorded in backend.calls; stderr stays quiet for tests

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # -- plumbing ---------------------------------------------------------------------------

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path or "/"
        self.backend.calls.append(f"{self.command} {path}")
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length", "0")
        body = Body(self.rfile, int(length) if length.isdigit() else 0, chunked)
        try:
            reply = self._route(path, params, headers, body)
        except DriveError as e:
            reply = Reply(e.code, e.body(), e.headers)
        except TokenError as e:
            reply = Reply(e.status, e.body())
        body.drain()
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = b""
        self.send_response(reply.status)
        if reply.media is None and reply.body is not None:
            if isinstance(reply.body, str):  # an HTML page (consent)
                data = reply.body.encode()
                self.send_header("Content-Type", "text/html; charset=UTF-8")
            else:
                data = json.dumps(reply.body).encode()
                self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(reply.length if reply.media else len(data)))
        self.end_headers()
        if reply.media is None:
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        with reply.media as f:  # streamed without the store's lock: contents can be large
            if self.command != "HEAD":
                try:
                    _copy(f, self.wfile, reply.length)
                except (BrokenPipeError, ConnectionResetError):
                    return

    def _route(self, path: str, params: Params, headers: dict[str, str], body: Body) -> Reply:
        b, method = self.backend, self.command
        if path == "/token" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body.read(1 << 20).decode()).items()}
            return Reply(200, b.auth.grant(form), {"Cache-Control": "no-store"})
        if path in ("/o/oauth2/auth", "/o/oauth2/v2/auth") and method == "GET":
            return _consent(b.auth, params)
        if path in ("/revoke", "/o/oauth2/revoke"):
            form = {k: v[-1] for k, v in parse_qs(body.read(1 << 20).decode()).items()}
            if not b.auth.revoke(params.get("token") or form.get("token", "")):
                raise TokenError(400, "invalid_token", "Token expired or revoked")
            return Reply(200, {})
        if path in ("/tokeninfo", "/oauth2/v3/tokeninfo"):
            return Reply(200, b.auth.token_info(params.get("access_token", "")))
        if path == "/_sim/health":
            return Reply(200, {"ok": True})
        if path == "/_sim/faults" and method == "POST":
            try:
                b.faults.add(**json.loads(body.read(1 << 20) or b"{}"))
            except (TypeError, ValueError) as e:
                raise DriveError(400, "badRequest", f"bad fault: {e}") from e
            return Reply(200, {"ok": True})
        upload = _UPLOAD.fullmatch(path)
        if upload and "upload_id" in params and method == "PUT":
            self._fault(path)  # a session URL is a capability: no token, as on Google
            return b.api.chunk(params["upload_id"], headers, body)
        if upload is None and not path.startswith("/drive/v2/"):
            raise DriveError(404, "notFound", f"Not Found: {path}")
        who = b.auth.principal(headers.get("authorization"))
        if who is None:
            raise _unauthorized()
        self._fault(f"{path}?{unquote_plus(urlsplit(self.path).query)}")
        if upload is not None:
            if method not in ("POST", "PUT") or (method == "POST") != (upload[1] is None):
                raise DriveError(405, "methodNotAllowed", f"{method} is not allowed here")
            return b.api.upload(who, upload[1], params, headers, body)
        return self._api(who, path, params, headers, body)

    def _api(
        self, who: Principal, path: str, params: Params, headers: dict[str, str], body: Body
    ) -> Reply:
        api, method = self.backend.api, self.command
        if path == "/drive/v2/about" and method == "GET":
            return api.about(who, params)
        if path == "/drive/v2/files":
            if method == "GET":
                return api.list(who, params)
            if method == "POST":
                return api.insert(who, params, _json_body(body))
        m = _FILE.fullmatch(path)
        if m is not None:
            fid, action = m[1], m[2]
            if action and method == "POST":
                return api.trash(who, fid, action == "trash", params)
            if action is None and method in ("GET", "HEAD"):
                return api.get(who, fid, params, headers.get("range"))
            if action is None and method in ("PATCH", "PUT"):
                return api.update(who, fid, params, _json_body(body))
            if action is None and method == "DELETE":
                return api.delete(who, fid)
        raise DriveError(404, "notFound", f"Not Found: {method} {path}")

    def _fault(self, where: str) -> None:
        err = self.backend.faults.take(self.command, where)
        if err is not None:
            raise err


def _json_body(body: Body) -> dict[str, Any]:
    return parse_json(body.read(1 << 20))


def _consent(auth: Auth, params: Params) -> Reply:
    try:
        target = auth.consent(params)
    except TokenError as e:
        page = f"<h1>Error 400: {e.error}</h1><p>{html.escape(e.description)}</p>"
        return Reply(400, page)
    if target.startswith("oob:"):
        code = html.escape(target[len("oob:") :])
        return Reply(200, f"<p>Copy this code into your application:</p><pre>{code}</pre>")
    return Reply(302, None, {"Location": target})


def _copy(src: Any, dst: Any, length: int) -> None:
    left = length
    while left > 0:
        piece = src.read(min(CHUNK, left))
        if not piece:
            return
        dst.write(piece)
        left -= len(piece)


def handler_class(backend: Backend) -> type[DriveHandler]:
    return type("BoundDriveHandler", (DriveHandler,), {"backend": backend})
