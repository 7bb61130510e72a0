"""Request bodies and the three upload protocols: simple (``media``), ``multipart`` and
``resumable`` (Google's resumable-upload protocol, as googleapiclient drives it).

Resumable, as the sim answers it: the first request carries the metadata and gets ``200`` with
``Location: <session url>``; each ``PUT <session url>`` with ``Content-Range: bytes a-b/N`` (or
``/*`` while the size is unknown) answers ``308`` with ``Range: bytes=0-k`` until the last byte,
then ``200`` with the File resource. ``Content-Range: bytes */N`` asks how much has arrived. A
chunk that overlaps what already arrived is trimmed (a client retrying after a lost answer); one
that leaves a gap is refused, as Google refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from launcher.sim.drive.store import CHUNK, Blob, DriveError

JSON = dict[str, Any]
MULTIPART_LIMIT = 64 * 1024 * 1024  # multipart bodies are parsed in memory
_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...


class Body:
    """A request body read at most once, in pieces: ``Content-Length`` or chunked."""

    def __init__(self, rfile: Reader, length: int | None, chunked: bool = False) -> None:
        self._rfile, self._left, self._chunked = rfile, length or 0, chunked
        self.length = None if chunked else (length or 0)

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """Up to ``limit`` bytes (everything left when None), in pieces."""
        want = float("inf") if limit is None else limit
        while want > 0:
            if self._chunked and self._left == 0:
                size_line = self._rfile.readline().split(b";")[0].strip()
                self._left = int(size_line or b"0", 16)
                if self._left == 0:
                    self._rfile.readline()  # the blank line after the last chunk
                    self._chunked = False
                    return
            piece = self._rfile.read(int(min(want, self._left, CHUNK)))
            if not piece:
                return
            self._left -= len(piece)
            want -= len(piece)
            if self._chunked and self._left == 0:
                self._rfile.readline()  # CRLF after each chunk
            yield piece

    def read(self, cap: int = MULTIPART_LIMIT) -> bytes:
        data = b"".join(self.chunks(cap + 1))
        if len(data) > cap:
            raise DriveError(413, "uploadTooLarge", "The request body is too large.")
        return data

    def drain(self) -> None:
        """Read what is left, so the client sees our answer rather than a reset connection."""
        for _ in self.chunks():
            pass


@dataclass
class Session:
    """A resumable upload in progress; ``finish`` creates or updates the file from the blob."""

    id: str
    path: Path
    finish: Callable[[Blob], JSON]
    total: int | None = None
    received: int = 0
    done: JSON | None = None
    md5: Any = field(default_factory=hashlib.md5)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def start(self, finish: Callable[[Blob], JSON], total: int | None) -> Session:
        sid = "sim-" + secrets.token_urlsafe(24)
        path = self.spool_dir / f"upload-{sid}"
        path.touch()
        session = Session(sid, path, finish, total)
        with self._lock:
            self._sessions[sid] = session
        return session

    def get(self, sid: str) -> Session | None:
        with self._lock:
            return self._sessions.get(sid)

    def put(
        self, session: Session, content_range: str | None, body: Body
    ) -> tuple[int, JSON | None, dict[str, str]]:
        """One ``PUT <session url>``: (status, File resource or None, headers)."""
        with session.lock:
            if session.done is not None:
                body.drain()
                return 200, session.done, {}
            if content_range is None:  # googleapiclient sends an empty upload without one
                start, end, total = session.received, None, session.received + (body.length or 0)
            else:
                m = _RANGE.match(content_range.strip())
                if m is None:
                    body.drain()
                    raise DriveError(400, "badRequest", f"Invalid Content-Range {content_range}")
                start = int(m[1]) if m[1] is not None else None
                end = int(m[2]) if m[2] is not None else None
                total = int(m[3]) if m[3] != "*" else None
            if total is not None and session.total is not None and total != session.total:
                body.drain()
                raise DriveError(400, "badRequest", "The upload size does not match the "
                                 f"size announced ({session.total} bytes).")  # fmt: skip
            if start is not None:
                self._append(session, start, end, body)
            else:
                body.drain()  # "bytes */N": a status query
            if total is not None:
                session.total = total
            if session.total is not None and session.received > session.total:
                raise DriveError(400, "badRequest", "More bytes than the upload's size.")
            if session.total is not None and session.received == session.total:
                blob = Blob(session.path, session.received, session.md5.hexdigest())
                try:
                    session.done = session.finish(blob)
                except DriveError:
                    self._drop(session)  # a refused final chunk ends the session, as on Drive
                    raise
                return 200, session.done, {}
            headers = {"X-GUploader-UploadID": session.id}
            if session.received:
                headers["Range"] = f"bytes=0-{session.received - 1}"
            return 308, None, headers

    def _drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        session.path.unlink(missing_ok=True)

    def _append(self, session: Session, start: int, end: int | None, body: Body) -> None:
        if start > session.received:
            body.drain()
            raise DriveError(
                400, "badRequest",
                f"Invalid request. According to the Content-Range header, the upload offset is "
                f"{start} byte(s), which exceeds already uploaded size of {session.received} "
                "byte(s).",
            )  # fmt: skip
        if end is not None and body.length is not None and end - start + 1 != body.length:
            body.drain()
            raise DriveError(400, "badRequest", "Content-Range does not match Content-Length.")
        skip = session.received - start
        for _ in body.chunks(skip):  # bytes that already arrived (a retried chunk)
            pass
        with session.path.open("ab") as f:
            for piece in body.chunks():
                f.write(piece)
                session.md5.update(piece)
                session.received += len(piece)


def split_multipart(data: bytes, content_type: str) -> tuple[JSON, str | None, bytes]:
    """The metadata part (JSON), and the media part's type and bytes, of a
    ``multipart/related`` body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None or not content_type.lower().startswith("multipart/related"):
        raise DriveError(400, "badContent", "Expected multipart/related with a boundary.")
    parts: list[tuple[dict[str, str], bytes]] = []
    for raw in data.split(b"--" + m[1].encode())[1:]:
        if raw.startswith(b"--"):
            break
        raw = raw[2:] if raw.startswith(b"\r\n") else raw[1:] if raw.startswith(b"\n") else raw
        crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
        cut, gap = (crlf, 4) if crlf != -1 and (lf == -1 or crlf < lf) else (lf, 2)
        if cut == -1:
            raise DriveError(400, "badContent", "A multipart part has no headers.")
        headers: dict[str, str] = {}
        for line in raw[:cut].decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        payload = raw[cut + gap :]
        payload = payload[:-2] if payload.endswith(b"\r\n") else payload.removesuffix(b"\n")
        if headers.get("content-transfer-encoding", "").lower() == "base64":
            payload = base64.b64decode(payload)
        parts.append((headers, payload))
    if len(parts) != 2:
        raise DriveError(400, "badContent", "Expected a metadata part and a media part.")
    try:
        meta = _json_object(parts[0][1])
    except ValueError as e:
        raise DriveError(400, "parseError", "The metadata part is not JSON.") from e
    return meta, parts[1][0].get("content-type"), parts[1][1]


def _json_object(data: bytes) -> JSON:
    value = json.loads(data or b"{}")
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value  # pyright: ignore[reportUnknownVariableType]
