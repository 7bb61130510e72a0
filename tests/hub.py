"""A minimal Hugging Face Hub on 127.0.0.1, as the Hub's HTTP API serves repositories: what the
launcher's fetcher and the official `huggingface_hub` client read to download a snapshot.

    GET  /api/{models|datasets}/{org}/{name}/revision/{rev}      repo info: sha, siblings
    GET  /api/{models|datasets}/{org}/{name}/tree/{rev}[?recursive=true]   files: path, size,
         oid (git blob id), lfs {oid: sha256, size} for large files
    HEAD|GET /[datasets/]{org}/{name}/resolve/{rev}/{path}        a small file itself (ETag: its
         blob id); a large (LFS) file redirects to the CDN (X-Linked-Etag: its sha256)

The CDN is a second server (another port, so another host to a client) that refuses requests
carrying an Authorization header, as S3-style storage behind the real Hub does: a client that
forwards the Hub token there fails. A private repository answers 401 without the token. Bytes
served are counted, so a test can see that a second run downloaded nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_OVER = 1000  # bytes: larger files are stored as LFS, as the Hub does for big weights


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


@dataclass
class Repo:
    files: dict[str, bytes]
    private: bool = False
    sha: str = field(default="")

    def __post_init__(self) -> None:
        h = hashlib.sha1()  # noqa: S324 - a commit id stand-in
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + self.files[path])
        self.sha = h.hexdigest()


class Hub:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}  # (models|datasets, org/name) -> repo
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, for the CDN
        self.sent = 0
        self.cdn_refused_auth = 0
        self.api_calls: list[str] = []  # "GET /api/..." as asked
        self.page_size = (
            2  # tree listings come in pages (a Link: rel="next" header), as on the Hub
        )
        self._lock = threading.Lock()
        self.api = self._server(self._api_handler())
        self.cdn = self._server(self._cdn_handler())
        self.url = f"http://127.0.0.1:{self.api.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def put(self, repo: str, files: dict[str, bytes], *, dataset: bool = False,
            private: bool = False) -> Repo:  # fmt: skip
        r = Repo(dict(files), private)
        for data in files.values():
            if len(data) > LFS_OVER:
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        self.repos[("datasets" if dataset else "models", repo)] = r
        return r

    def close(self) -> None:
        for s in (self.api, self.cdn):
            s.shutdown()
            s.server_close()

    @staticmethod
    def _server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _api_handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Api(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _repo(self, kinds: str, repo: str) -> Repo | None:
                r = hub.repos.get((kinds, repo))
                if r is None:
                    self._json(404, {"error": "Repository not found"},
                               {"X-Error-Code": "RepoNotFound"})  # fmt: skip
                    return None
                if r.private and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._json(401, {"error": "Invalid credentials"},
                               {"X-Error-Code": "RepoNotFound"})  # fmt: skip
                    return None
                return r

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                segs = [unquote(s) for s in parts.path.strip("/").split("/")]
                if segs[:1] == ["api"]:
                    hub.api_calls.append(f"{self.command} {self.path}")
                if segs[:1] == ["api"] and len(segs) >= 6 and segs[4] in ("revision", "tree"):
                    kinds, repo, what, rev = segs[1], f"{segs[2]}/{segs[3]}", segs[4], segs[5]
                    r = self._repo(kinds, repo)
                    if r is None:
                        return
                    if rev not in ("main", r.sha):
                        self._json(404, {"error": f"Invalid rev id: {rev}"},
                                   {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
                        return
                    if what == "revision":
                        self._json(200, {
                            "id": repo, "sha": r.sha, "private": r.private, "tags": [],
                            "siblings": [{"rfilename": p} for p in sorted(r.files)],
                        })  # fmt: skip
                        return
                    tree = self._tree(r, "/".join(segs[6:]))
                    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
                    start = int(query.get("cursor", "0"))
                    page = tree[start : start + hub.page_size]
                    headers: dict[str, str] = {}
                    if start + hub.page_size < len(tree):
                        nxt = (
                            f"{hub.url}{parts.path}?recursive=true&cursor={start + hub.page_size}"
                        )
                        headers["Link"] = f'<{nxt}>; rel="next"'
                    self._json(200, page, headers)
                    return
                self._resolve(segs)

            do_HEAD = do_GET

            def _tree(self, r: Repo, under: str) -> list[dict[str, Any]]:
                out: list[dict[str, Any]] = []
                folders: set[str] = set()
                for path in sorted(r.files):
                    if under and not path.startswith(under.rstrip("/") + "/"):
                        continue
                    data = r.files[path]
                    entry: dict[str, Any] = {"type": "file", "oid": blob_id(data),
                                             "size": len(data), "path": path}  # fmt: skip
                    if len(data) > LFS_OVER:
                        sha = hashlib.sha256(data).hexdigest()
                        entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
                    out.append(entry)
                    parts = path.split("/")[:-1]
                    for i in range(1, len(parts) + 1):
                        folders.add("/".join(parts[:i]))
                out += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f}
                        for f in sorted(folders)]  # fmt: skip
                return out

            def _resolve(self, segs: list[str]) -> None:
                kinds = "models"
                if segs[:1] == ["datasets"]:
                    kinds, segs = "datasets", segs[1:]
                if len(segs) < 5 or segs[2] != "resolve":
                    self._json(404, {"error": "Not found"})
                    return
                repo, rev, path = f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:])
                r = self._repo(kinds, repo)
                if r is None:
                    return
                if rev not in ("main", r.sha) or path not in r.files:
                    self._json(404, {"error": "Entry not found"},
                               {"X-Error-Code": "EntryNotFound"})  # fmt: skip
                    return
                data = r.files[path]
                common = {"X-Repo-Commit": r.sha, "Accept-Ranges": "bytes"}
                if len(data) > LFS_OVER:
                    sha = hashlib.sha256(data).hexdigest()
                    self.send_response(302)
                    for k, v in dict(common, **{
                        "Location": f"{hub.cdn_url}/blobs/{sha}",
                        "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                        "ETag": f'"{blob_id(data)}"', "Content-Length": "0",
                    }).items():  # fmt: skip
                        self.send_header(k, v)
                    self.end_headers()
                    return
                self.send_response(200)
                for k, v in dict(common, **{"ETag": f'"{blob_id(data)}"',
                                            "Content-Length": str(len(data))}).items():  # fmt: skip
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    hub._count(len(data))  # pyright: ignore[reportPrivateUsage]

        return Api

    def _cdn_handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Cdn(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization"):
                    hub.cdn_refused_auth += 1
                    body = b"Only one auth mechanism allowed"
                    self.send_response(400)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = hub.blobs.get(self.path.rsplit("/", 1)[-1].split("?")[0])
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                asked = self.headers.get("Range") or ""
                if asked.startswith("bytes=") and asked[6:].split("-")[0].isdigit():
                    start = min(int(asked[6:].split("-")[0]), len(data))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[start:])
                    hub._count(len(data) - start)  # pyright: ignore[reportPrivateUsage]

            do_HEAD = do_GET

        return Cdn
