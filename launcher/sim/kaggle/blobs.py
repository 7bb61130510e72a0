"""Blob uploads: `StartBlobUpload` hands out a token and an upload URL on the sim itself.

The URL follows Google's resumable-upload semantics, which the kaggle client speaks
(`upload_complete` / `_resume_upload` in kaggle_api_extended.py; reference §1.3, "Blob upload
flow"):

- ``PUT`` with the whole body and no ``Content-Range``: 200 when every declared byte arrived.
- ``PUT`` with ``Content-Range: bytes K-L/N``: a chunk; 308 with ``Range: bytes=0-M`` until the
  last byte arrives, then 200.
- ``PUT`` with ``Content-Length: 0`` and ``Content-Range: bytes */N``: a probe; 308 (with
  ``Range`` when some bytes arrived, without it when none did) or 200 when complete.
- an unknown or expired token: 404, which tells the client to start over.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass
class Blob:
    token: str
    name: str
    length: int
    path: Path
    received: int = 0

    @property
    def complete(self) -> bool:
        return self.received >= self.length


@dataclass
class PutResult:
    status: int
    headers: dict[str, str]


class BlobStore:
    """Upload sessions and their bytes under ``root``; thread-safe."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._blobs: dict[str, Blob] = {}
        self._lock = threading.Lock()
        # the next PUT keeps only this many bytes and answers 503 (an interrupted upload)
        self.interrupt_after: int | None = None
        self.bytes_received = 0  # every byte any PUT brought, as the platform would bill them

    def start(self, name: str, length: int) -> Blob:
        token = "blob-" + secrets.token_hex(8)
        path = self._root / token
        path.write_bytes(b"")
        blob = Blob(token=token, name=Path(name).name or "file", length=max(0, length), path=path)
        with self._lock:
            self._blobs[token] = blob
        return blob

    def get(self, token: str) -> Blob | None:
        with self._lock:
            return self._blobs.get(token)

    def expire(self, token: str) -> None:
        with self._lock:
            self._blobs.pop(token, None)

    def put(self, token: str, content_range: str | None, body: bytes) -> PutResult:
        blob = self.get(token)
        if blob is None:
            return PutResult(404, {})
        with self._lock:
            cut = self.interrupt_after
            self.interrupt_after = None
        start = 0
        if content_range:
            m = _RANGE.fullmatch(content_range.strip())
            if m is None:
                return PutResult(400, {})
            if m.group(1) is None:  # a probe: "bytes */N"
                return self._progress(blob)
            start = int(m.group(1))
            if m.group(3) != "*":
                blob.length = int(m.group(3))
        if start > blob.received:
            # a gap: Google answers with what it has so the client resumes from there
            return self._progress(blob)
        if cut is not None:
            body = body[:cut]
        with self._lock:
            self.bytes_received += len(body)
        with blob.path.open("r+b") as f:
            f.seek(start)
            f.write(body)
            f.truncate(start + len(body))
        blob.received = start + len(body)
        if cut is not None:
            return PutResult(503, {"Retry-After": "0"})
        return self._progress(blob)

    @staticmethod
    def _progress(blob: Blob) -> PutResult:
        if blob.complete:
            return PutResult(200, {})
        headers = {"Range": f"bytes=0-{blob.received - 1}"} if blob.received else {}
        return PutResult(308, headers)
