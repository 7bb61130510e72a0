"""HTTP front of the Kaggle sim: routing, auth, injected failures.

Routes (reference §1.5), each under both ``/v1/`` and ``/api/v1/``, also as absolute-form request
lines (``POST http://localhost/api/v1/...``, which is what a client sends through ``HTTP_PROXY``):

- ``POST /v1/{service}/{Method}``: the RPCs, camelCase JSON in and out; errors are an HTTP status
  with ``{"code", "message"}``.
- ``GET /v1/kernels/logs/stream/{owner}/{slug}``: ``kernels logs --follow``; SSE while the session
  runs (``data: {json}`` lines, then ``data: END_OF_LOG``), a JSON array once it has ended.
- ``PUT /_emu/upload/{token}``: blob upload URLs (no auth, as on GCS).
- ``GET /_emu/output/{session}/{path}``: output file URLs (no auth, as signed URLs).
- ``GET /_emu/dataset/{token}/{slug}.zip``: where ``DownloadDataset`` redirects (no auth).
- ``POST /_emu/control/{knob}``: failure knobs for tests in other processes (see ``KaggleSim``).
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from launcher.sim.kaggle.blobs import BlobStore
from launcher.sim.kaggle.datasets import DatasetStore
from launcher.sim.kaggle.kernels import KernelStore
from launcher.sim.kaggle.quota import QuotaBook
from launcher.sim.kaggle.rpc import RpcError

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class Faults:
    """Answer the next ``count`` API requests (RPCs and the log stream) with ``status``."""

    count: int = 0
    status: int = 429
    retry_after: float | None = None
    method: str | None = None  # only requests whose RPC name contains this
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, rpc: str) -> tuple[int, float | None] | None:
        with self.lock:
            if self.count <= 0 or (self.method and self.method not in rpc):
                return None
            self.count -= 1
            return self.status, self.retry_after


@dataclass
class Backend:
    blobs: BlobStore
    datasets: DatasetStore
    kernels: KernelStore
    quota: QuotaBook
    users: dict[str, str]  # username -> legacy API key
    tokens: dict[str, str]  # API token -> username
    faults: Faults
    control: Callable[[str, dict[str, Any]], dict[str, Any]]
    base_url: str = ""
    calls: list[str] = field(default_factory=list[str])  # "VERB /path" as requested

    def rpcs(self) -> dict[str, Handler]:
        k, d, b = self.kernels, self.datasets, self.blobs
        base = self.base_url
        return {
            "kernels.KernelsApiService/SaveKernel": k.save,
            "kernels.KernelsApiService/GetKernelSessionStatus": k.status,
            "kernels.KernelsApiService/ListKernelSessionOutput": lambda u, r: k.output(u, r, base),
            "kernels.KernelsApiService/GetKernel": k.get,
            "kernels.KernelsApiService/ListKernels": k.list_kernels,
            "kernels.KernelsApiService/DeleteKernel": k.delete,
            "kernels.KernelsApiService/CancelKernelSession": k.cancel,
            "kernels.KernelsApiService/GetAcceleratorQuotaStatistics": (
                lambda u, _r: self.quota.statistics(u)
            ),
            "datasets.DatasetApiService/GetDatasetStatus": d.get_status,
            "datasets.DatasetApiService/CreateDataset": d.create,
            "datasets.DatasetApiService/CreateDatasetVersion": d.create_version,
            "datasets.DatasetApiService/CreateDatasetVersionById": d.create_version_by_id,
            "datasets.DatasetApiService/GetDataset": d.get,
            "datasets.DatasetApiService/ListDatasetFiles": d.list_files,
            "datasets.DatasetApiService/GetDatasetMetadata": d.metadata,
            "datasets.DatasetApiService/DeleteDataset": d.delete,
            "datasets.DatasetApiService/DownloadDataset": d.get_status,  # a redirect: do_POST
            "blobs.BlobApiService/StartBlobUpload": lambda _u, r: self._start_blob(b, r),
        }

    def _start_blob(self, blobs: BlobStore, body: dict[str, Any]) -> dict[str, Any]:
        blob = blobs.start(str(body.get("name") or "file"), int(body.get("contentLength") or 0))
        return {"token": blob.token, "createUrl": f"{self.base_url}/_emu/upload/{blob.token}"}


class KaggleHandler(BaseHTTPRequestHandler):
    backend: Backend  # set on a subclass by KaggleSim
    server_version = "kaggle-sim"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are recorded in backend.calls; stderr stays quiet for tests

    # -- plumbing ---------------------------------------------------------------------------

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        """The path with /api/v1 folded into /v1, and the query; records the request."""
        parts = urlsplit(self.path)  # also absolute-form lines: "POST http://localhost/api/v1/..."
        path = parts.path or "/"
        self.backend.calls.append(f"{self.command} {path}")
        if path.startswith("/api/v1/"):
            path = path[len("/api") :]
        return path, parse_qs(parts.query)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(_drop_nulls(payload)).encode() if payload is not None else b""
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(code, {"code": code, "message": message}, headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, key = base64.b64decode(cred).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            found = next((u for u in self.backend.users if u.lower() == user.lower()), None)
            return found if found and self.backend.users[found] == key else None
        if scheme.lower() == "bearer":
            return self.backend.tokens.get(cred.strip())
        return None

    def _fault(self, rpc: str) -> bool:
        hit = self.backend.faults.take(rpc)
        if hit is None:
            return False
        status, retry_after = hit
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        msg = "Too Many Requests" if status == 429 else "injected failure"
        self._error(status, msg, headers)
        return True

    # -- verbs ------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path, _ = self._route()
        body = self._body()
        if path.startswith("/_emu/control/"):
            try:
                req = json.loads(body or b"{}")
                self._send(200, self.backend.control(path.rsplit("/", 1)[1], req))
            except (ValueError, TypeError, KeyError) as e:
                self._error(400, f"bad control request: {e}")
            return
        if not path.startswith("/v1/"):
            self._error(404, "Not found")
            return
        rpc = path[len("/v1/") :]
        if self._fault(rpc):
            return
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            self._error(400, "the body is not JSON")
            return
        if rpc == "security.OAuthService/IntrospectToken":
            user = self.backend.tokens.get(str(req.get("token", "")))
            answer = {"active": True, "username": user, "clientId": "kaggle-sim", "scope": "*"}
            self._send(200, answer if user else {"active": False})
            return
        handler = self.backend.rpcs().get(rpc)
        if handler is None:
            self._error(404, f"Not found: the sim does not implement {rpc}")
            return
        user = self._user()
        if user is None:
            self._error(401, "Unauthenticated: send Basic username:key or a Bearer API token")
            return
        try:
            if rpc == "datasets.DatasetApiService/DownloadDataset":
                where = self.backend.datasets.download_link(user, req)
                self._send(302, None, {"Location": f"{self.backend.base_url}{where}"})
                return
            self._send(200, handler(user, req))
        except RpcError as e:
            self._error(e.code, e.message)

    def do_PUT(self) -> None:  # noqa: N802
        path, _ = self._route()
        body = self._body()
        if not path.startswith("/_emu/upload/"):
            self._error(404, "Not found")
            return
        result = self.backend.blobs.put(
            path.rsplit("/", 1)[1], self.headers.get("Content-Range"), body
        )
        self._send(result.status, {} if result.status == 200 else None, result.headers)

    def do_GET(self) -> None:  # noqa: N802
        path, _query = self._route()
        if path == "/_emu/health":
            self._send(200, {"ok": True})
        elif path.startswith("/_emu/output/"):
            self._output_file(path[len("/_emu/output/") :])
        elif path.startswith("/_emu/dataset/"):
            self._dataset_archive(path[len("/_emu/dataset/") :].split("/", 1)[0])
        elif path.startswith("/v1/kernels/logs/stream/"):
            if self._fault("kernels/logs/stream"):
                return
            user = self._user()
            if user is None:
                self._error(401, "Unauthenticated")
                return
            owner, _, slug = path[len("/v1/kernels/logs/stream/") :].partition("/")
            label = (_query.get("versionLabel") or [None])[0]
            try:
                session = self.backend.kernels.latest_session(user, owner, slug, label)
            except RpcError as e:
                self._error(e.code, e.message)
                return
            self._stream_log(session)
        else:
            self._error(404, "Not found")

    do_HEAD = do_GET

    def _output_file(self, rest: str) -> None:
        sid, _, rel = rest.partition("/")
        session = self.backend.kernels.session(int(sid)) if sid.isdigit() else None
        if session is None or not session.terminal:
            self._error(404, "Not found")
            return
        root = session.working.resolve()
        target = (root / unquote(rel)).resolve()
        if not target.is_file() or not target.is_relative_to(root):
            self._error(404, "Not found")
            return
        size = target.stat().st_size
        start = _range_start(self.headers.get("Range"), size)
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if self.command != "HEAD":
            with target.open("rb") as f:  # streamed: outputs can be large checkpoints
                f.seek(start)
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _dataset_archive(self, token: str) -> None:
        found = self.backend.datasets.archive(token)
        if found is None:
            self._error(404, "Not found")
            return
        ref, archive = found
        size = archive.stat().st_size
        asked = self.headers.get("Range") or ""
        first = asked[len("bytes=") :].split("-", 1)[0] if asked.startswith("bytes=") else ""
        start = int(first) if first.isdigit() else 0
        if start and start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(archive.stat().st_mtime))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        try:
            with archive.open("rb") as f:
                f.seek(start)
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.wfile.write(block)
                    sent += len(block)
        finally:
            self.backend.datasets.count_served(ref, sent)

    def _stream_log(self, session: Any) -> None:
        if session.terminal:
            self._send(200, list(session.log))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sent = 0
        try:
            while True:
                with session.changed:
                    while len(session.log) == sent and not session.terminal:
                        session.changed.wait(1.0)
                    events = session.log[sent:]
                    done = session.terminal
                for ev in events:
                    self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                sent += len(events)
                if done:
                    self.wfile.write(b"data: END_OF_LOG\n\n")
                    return
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


def _drop_nulls(value: Any) -> Any:
    """Proto JSON omits unset fields; a null would overwrite kagglesdk's non-null defaults."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def _range_start(header: str | None, size: int) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    first = header[len("bytes=") :].split("-", 1)[0]
    return int(first) if first.isdigit() and int(first) < size else 0


def handler_class(backend: Backend) -> type[KaggleHandler]:
    return type("BoundKaggleHandler", (KaggleHandler,), {"backend": backend})
