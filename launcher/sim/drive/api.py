"""The Drive v2 operations behind the routes: about, files.list/get/insert/patch/update/trash/
untrash/delete, media download and the three upload types. server.py does the HTTP."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from launcher.sim.drive.auth import Principal
from launcher.sim.drive.query import QueryError, parse
from launcher.sim.drive.resource import about_resource, file_resource, parse_fields, select
from launcher.sim.drive.store import Blob, Changes, DriveError, FileMeta, Store
from launcher.sim.drive.uploads import Body, Sessions, split_multipart

JSON = dict[str, Any]
Params = dict[str, str]
DEFAULT_MIME = "application/octet-stream"
_BYTES = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON, or a str for an HTML page; None answers no body
    headers: dict[str, str] = field(default_factory=dict[str, str])
    media: IO[bytes] | None = None  # streamed after the headers: ``length`` bytes from here
    length: int = 0


def quota_error() -> DriveError:
    return DriveError(
        403,
        "storageQuotaExceeded",
        "Service Accounts do not have storage quota. Leverage shared drives "
        "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives), or use "
        "OAuth delegation (http://support.google.com/a/answer/7281227) instead.",
        domain="usageLimits",
    )


class DriveApi:
    def __init__(self, store: Store, sessions: Sessions, base_url: Callable[[], str]) -> None:
        self.store, self.sessions, self._base_url = store, sessions, base_url

    def resource(self, meta: FileMeta, who: Principal) -> JSON:
        root = self.store.root_id(who.email)
        return file_resource(meta, self._base_url(), viewer=who.email, root_id=root)

    def _file_reply(self, meta: FileMeta, who: Principal, params: Params) -> Reply:
        return Reply(200, select(self.resource(meta, who), parse_fields(params.get("fields", ""))))

    # -- metadata ---------------------------------------------------------------------------

    def about(self, who: Principal, params: Params) -> Reply:
        body = about_resource(
            who.email,
            root_id=self.store.root_id(who.email),
            used=self.store.used_bytes(who.email),
            service=who.service,
        )
        return Reply(200, select(body, parse_fields(params.get("fields", ""))))

    def list(self, who: Principal, params: Params) -> Reply:
        if params.get("corpora") == "drive" or params.get("driveId"):
            drive = params.get("driveId", "")
            raise DriveError(404, "notFound", f"Shared drive not found: {drive}",
                             location="driveId")  # fmt: skip
        try:
            query = parse(params.get("q", ""))
        except QueryError as e:
            raise DriveError(400, "invalid", f"Invalid query: {e}", location="q") from e
        limit = _int_param(params, "maxResults", 100, 0, 1000) or 100
        found, next_after = self.store.list(
            who.email, query, limit=limit, after=_page_after(params.get("pageToken"))
        )
        body: JSON = {
            "kind": "drive#fileList",
            "etag": '"sim"',
            "selfLink": f"{self._base_url()}/drive/v2/files",
            "incompleteSearch": False,
            "items": [self.resource(f, who) for f in found],
        }
        if next_after is not None:
            body["nextPageToken"] = base64.urlsafe_b64encode(f"seq:{next_after}".encode()).decode()
        return Reply(200, select(body, parse_fields(params.get("fields", ""))))

    def get(self, who: Principal, file_id: str, params: Params, range_header: str | None) -> Reply:
        alt = params.get("alt", "json")
        if alt == "media":
            return self._download(who, file_id, range_header)
        if alt != "json":
            raise DriveError(400, "invalidAlt", f"Invalid value for alt: {alt}", location="alt")
        return self._file_reply(self.store.get(who.email, file_id), who, params)

    def insert(self, who: Principal, params: Params, meta: JSON, blob: Blob | None = None,
               media_type: str | None = None) -> Reply:  # fmt: skip
        c = _changes(meta)
        try:
            parents = self.store.check_parents(who.email, c.parents or [])
            if who.service:  # every folder in the sim is in a My Drive, none in a shared drive
                raise quota_error()
            created = self.store.insert(
                who.email,
                title=c.title or "Untitled",
                mime_type=c.mime_type or media_type or DEFAULT_MIME,
                parents=parents,
                description=c.description or "",
                blob=blob,
            )
        except DriveError:
            if blob is not None:
                self.store.discard(blob)
            raise
        if c.trashed:
            created = self.store.update(who.email, created.id, Changes(trashed=True))
        return self._file_reply(created, who, params)

    def update(self, who: Principal, file_id: str, params: Params, meta: JSON,
               blob: Blob | None = None) -> Reply:  # fmt: skip
        c = _changes(meta)
        parents = c.parents
        if "addParents" in params or "removeParents" in params:
            have = parents if parents is not None else self.store.get(who.email, file_id).parents
            drop = set(filter(None, params.get("removeParents", "").split(",")))
            root = self.store.root_id(who.email)
            drop |= {root} if "root" in drop else set()
            add = [p for p in params.get("addParents", "").split(",") if p]
            parents = [p for p in have if p not in drop] + add
        try:
            updated = self.store.update(
                who.email,
                file_id,
                Changes(c.title, c.description, c.mime_type, parents, c.trashed),
                blob,
            )
        except DriveError:
            if blob is not None:
                self.store.discard(blob)
            raise
        return self._file_reply(updated, who, params)

    def trash(self, who: Principal, file_id: str, trashed: bool, params: Params) -> Reply:
        meta = self.store.update(who.email, file_id, Changes(trashed=trashed))
        return self._file_reply(meta, who, params)

    def delete(self, who: Principal, file_id: str) -> Reply:
        self.store.delete(who.email, file_id)
        return Reply(204)

    # -- content ----------------------------------------------------------------------------

    def _download(self, who: Principal, file_id: str, range_header: str | None) -> Reply:
        handle, meta = self.store.open_content(who.email, file_id)
        size = meta.size or 0
        headers = {"Content-Type": meta.mime_type, "Accept-Ranges": "bytes"}
        m = _BYTES.match((range_header or "").strip())
        if m is None or not (m[1] or m[2]):  # no Range, or one we do not parse: everything
            return Reply(200, None, headers, handle, size)
        if m[1]:
            start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
        else:  # "bytes=-N": the last N bytes
            start, end = max(size - int(m[2]), 0), size - 1
        if start >= size or start > end:
            handle.close()
            raise DriveError(416, "requestedRangeNotSatisfiable", "Request range not satisfiable",
                             headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
        handle.seek(start)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Reply(206, None, headers, handle, end - start + 1)

    def upload(self, who: Principal, file_id: str | None, params: Params,
               headers: dict[str, str], body: Body) -> Reply:  # fmt: skip
        """``POST /upload/drive/v2/files`` (``file_id`` None) or ``PUT .../files/{id}``."""
        kind = params.get("uploadType", "media")
        content_type = headers.get("content-type", "")
        if kind == "resumable":
            meta = parse_json(body.read())
            return self._start_resumable(who, file_id, params, meta, headers)
        if kind == "multipart":
            meta, media_type, data = split_multipart(body.read(), content_type)
            blob = self.store.spool([data])
        elif kind == "media":
            if file_id is None and who.service:  # into its own My Drive: refuse before reading
                raise quota_error()
            meta, media_type = {}, content_type.split(";")[0].strip() or None
            blob = self.store.spool(body.chunks())
        else:
            raise DriveError(400, "invalid", f"Invalid upload type: {kind}", location="uploadType")
        if file_id is None:
            return self.insert(who, params, meta, blob, media_type)
        return self.update(who, file_id, params, meta, blob)

    def _start_resumable(self, who: Principal, file_id: str | None, params: Params,
                         meta: JSON, headers: dict[str, str]) -> Reply:  # fmt: skip
        media_type = headers.get("x-upload-content-type")
        length = headers.get("x-upload-content-length")
        total = int(length) if length and length.isdigit() else None
        # check now what would fail at the end, as Drive does (the client has not sent bytes)
        if file_id is None:
            self.store.check_parents(who.email, _changes(meta).parents or [])
            if who.service:
                raise quota_error()
        else:
            self.store.get(who.email, file_id)
            _changes(meta)

        def finish(blob: Blob) -> JSON:
            if file_id is None:
                reply = self.insert(who, params, meta, blob, media_type)
            else:
                reply = self.update(who, file_id, params, meta, blob)
            result: JSON = reply.body
            return result

        session = self.sessions.start(finish, total)
        path = "/upload/drive/v2/files" + (f"/{file_id}" if file_id else "")
        location = f"{self._base_url()}{path}?uploadType=resumable&upload_id={session.id}"
        return Reply(200, None, {"Location": location, "X-GUploader-UploadID": session.id})

    def chunk(self, upload_id: str, headers: dict[str, str], body: Body) -> Reply:
        session = self.sessions.get(upload_id)
        if session is None:
            raise DriveError(404, "notFound", "No upload session with this id.",
                             location="upload_id")  # fmt: skip
        status, resource, extra = self.sessions.put(session, headers.get("content-range"), body)
        return Reply(status, resource, extra)


def parse_json(data: bytes) -> JSON:
    """A JSON object request body; anything else is Drive's 400 ``parseError``."""
    try:
        value = json.loads(data or b"{}")
    except ValueError as e:
        raise DriveError(400, "parseError", "Parse Error") from e
    if not isinstance(value, dict):
        raise DriveError(400, "parseError", "Parse Error")
    return value  # pyright: ignore[reportUnknownVariableType]


def _changes(meta: JSON) -> Changes:
    """The writable fields of a File body; a wrong type is Drive's 400 ``invalid``."""

    def text(name: str) -> str | None:
        value = meta.get(name)
        if value is not None and not isinstance(value, str):
            raise DriveError(400, "invalid", f"Invalid value for {name}", location=name)
        return value

    parents: list[str] | None = None
    raw = meta.get("parents")
    if raw is not None:
        if not isinstance(raw, list):
            raise DriveError(400, "invalid", "Invalid value for parents", location="parents")
        parents = []
        for ref in raw:  # pyright: ignore[reportUnknownVariableType]
            pid = ref.get("id") if isinstance(ref, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if not isinstance(pid, str) or not pid:
                raise DriveError(400, "invalid", "Each parent needs an id", location="parents")
            parents.append(pid)
    labels = meta.get("labels")
    trashed = labels.get("trashed") if isinstance(labels, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    return Changes(
        title=text("title"),
        description=text("description"),
        mime_type=text("mimeType"),
        parents=parents,
        trashed=trashed if isinstance(trashed, bool) else None,
    )


def _int_param(params: Params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise DriveError(400, "invalid", f"Invalid value '{raw}'. Values must be within the "
                         f"range: [{low}, {high}]", location=name)  # fmt: skip
    return int(raw)


def _page_after(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        kind, seq = "", ""
    if kind != "seq" or not seq.isdigit():
        raise DriveError(400, "invalid", "Invalid Value", location="pageToken")
    return int(seq)
