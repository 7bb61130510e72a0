"""Files of the Drive sim: metadata in memory, contents as files under a data directory.

One ``Store`` serves every user; each user (by email) has a My Drive whose root folder is made on
first use. A user sees only their own files: anything else is ``notFound``, as Drive answers
for a file you have no access to. All reads and writes of metadata hold one lock; contents are
written to a spool file first (outside the lock) and moved into place with ``os.replace``, so a
download that already opened the old content keeps reading it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from launcher.sim.drive.query import Query, matches

FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
CHUNK = 1 << 20


class DriveError(Exception):
    """An answer in Drive's error shape: ``{"error": {"code", "message", "errors": [...]}}``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str = "parameter",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.domain = code, reason, message, domain
        self.location, self.location_type = location, location_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        detail: dict[str, str] = {"domain": self.domain, "reason": self.reason,
                                  "message": self.message}  # fmt: skip
        if self.location:
            detail.update(location=self.location, locationType=self.location_type)
        return {"error": {"code": self.code, "message": self.message, "errors": [detail]}}


def not_found(file_id: str) -> DriveError:
    return DriveError(404, "notFound", f"File not found: {file_id}.", location="fileId")


@dataclass
class FileMeta:
    """A file or folder. ``trashed`` is in effect (explicitly, or every parent is trashed);
    ``size``/``md5`` are None for folders and Google-native types, which have no content."""

    id: str
    title: str
    mime_type: str
    parents: list[str]
    owner: str
    trashed: bool = False
    explicitly_trashed: bool = False
    size: int | None = None
    md5: str | None = None
    description: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: int = 1
    seq: int = 0  # creation order: lists are sorted by it, page tokens point into it
    is_root: bool = False

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    @property
    def has_content(self) -> bool:
        return not self.mime_type.startswith(GOOGLE_APPS_PREFIX)


@dataclass(frozen=True)
class Blob:
    """Content spooled to disk, not yet attached to a file."""

    path: Path
    size: int
    md5: str


@dataclass(frozen=True)
class Changes:
    """A metadata update; None leaves a field as it is."""

    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    parents: list[str] | None = None
    trashed: bool | None = None


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.blobs = data_dir / "blobs"
        self.spool_dir = data_dir / "spool"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._files: dict[str, FileMeta] = {}
        self._roots: dict[str, str] = {}  # lower-cased owner email -> root folder id
        self._seq = itertools.count(1)
        self._version = itertools.count(1)

    # -- spooling content (no lock held) ----------------------------------------------------

    def spool(self, chunks: Iterable[bytes]) -> Blob:
        """Write ``chunks`` to a new spool file, hashing as it goes."""
        fd, name = tempfile.mkstemp(dir=self.spool_dir)
        digest, size = hashlib.md5(), 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return Blob(Path(name), size, digest.hexdigest())

    def discard(self, blob: Blob) -> None:
        blob.path.unlink(missing_ok=True)

    # -- reads ------------------------------------------------------------------------------

    def root_id(self, owner: str) -> str:
        with self.lock:
            key = owner.lower()
            if key not in self._roots:
                root = FileMeta(
                    id="0A" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y"),
                    title="My Drive",
                    mime_type=FOLDER_MIME,
                    parents=[],
                    owner=owner,
                    is_root=True,
                    seq=next(self._seq),
                    version=next(self._version),
                )
                self._files[root.id] = root
                self._roots[key] = root.id
            return self._roots[key]

    def get(self, owner: str, file_id: str) -> FileMeta:
        """A snapshot of the file; ``root`` is the owner's root folder."""
        with self.lock:
            return replace(self._own(owner, file_id))

    def list(
        self, owner: str, query: Query | None, *, limit: int, after: int = 0
    ) -> tuple[list[FileMeta], int | None]:
        """Files of ``owner`` matching ``query`` with ``seq`` above ``after``, in creation
        order; the second value is the ``after`` of the next page, None on the last one."""
        with self.lock:
            root = self.root_id(owner)
            key = owner.lower()
            found: list[FileMeta] = []
            for f in self._files.values():  # insertion order is ``seq`` order
                if f.seq <= after or f.is_root or f.owner.lower() != key:
                    continue
                if matches(query, f, root_id=root, viewer=owner):
                    if len(found) == limit:
                        return found, found[-1].seq
                    found.append(replace(f))
            return found, None

    def open_content(self, owner: str, file_id: str) -> tuple[IO[bytes], FileMeta]:
        """An open handle on the content (the caller closes it) and the metadata it matches."""
        with self.lock:
            meta = self._own(owner, file_id)
            if meta.is_folder or not meta.has_content:
                raise DriveError(
                    403,
                    "fileNotDownloadable",
                    "Only files with binary content can be downloaded. Use Export with Docs "
                    "Editors files.",
                )
            return self._blob_path(meta.id).open("rb"), replace(meta)

    def all_files(self) -> list[FileMeta]:
        with self.lock:
            return [replace(f) for f in self._files.values() if not f.is_root]

    def content(self, file_id: str) -> bytes:
        with self.lock:
            if file_id not in self._files:
                raise KeyError(file_id)
            path = self._blob_path(file_id)
        return path.read_bytes() if path.exists() else b""

    def used_bytes(self, owner: str) -> int:
        with self.lock:
            return sum(
                f.size or 0 for f in self._files.values() if f.owner.lower() == owner.lower()
            )

    # -- writes -----------------------------------------------------------------------------

    def check_parents(self, owner: str, parents: list[str]) -> list[str]:
        """The parent ids with ``root`` resolved; each must be a folder of ``owner``."""
        with self.lock:
            resolved: list[str] = []
            for pid in parents:
                parent = self._own(owner, pid)
                if not parent.is_folder:
                    raise DriveError(
                        400, "invalidParent", f"The parent {pid} is not a folder.",
                        location="parents",
                    )  # fmt: skip
                if parent.id not in resolved:
                    resolved.append(parent.id)
            return resolved or [self.root_id(owner)]

    def insert(
        self,
        owner: str,
        *,
        title: str,
        mime_type: str,
        parents: list[str],
        description: str = "",
        blob: Blob | None = None,
    ) -> FileMeta:
        with self.lock:
            meta = FileMeta(
                id="1" + secrets.token_urlsafe(24),
                title=title,
                mime_type=mime_type,
                parents=self.check_parents(owner, parents),
                owner=owner,
                description=description,
                seq=next(self._seq),
                version=next(self._version),
            )
            self._files[meta.id] = meta
            self._set_content(meta, blob)
            # inside a trashed folder is trashed; nothing else changes, so no full refresh
            meta.trashed = all(self._files[p].trashed for p in meta.parents)
            return replace(meta)

    def update(
        self, owner: str, file_id: str, changes: Changes, blob: Blob | None = None
    ) -> FileMeta:
        with self.lock:
            meta = self._own(owner, file_id)
            if meta.is_root and (changes.parents is not None or changes.trashed is not None):
                raise DriveError(403, "cannotModifyRoot", "The root folder cannot be moved.")
            if changes.parents is not None:
                parents = self.check_parents(owner, changes.parents)
                if meta.is_folder and meta.id in self._ancestors(parents):
                    raise DriveError(
                        400, "invalidParent", "A folder cannot be moved into itself.",
                        location="parents",
                    )  # fmt: skip
                meta.parents = parents
            if changes.title is not None:
                meta.title = changes.title
            if changes.description is not None:
                meta.description = changes.description
            if changes.mime_type is not None and not meta.is_folder:
                meta.mime_type = changes.mime_type
            if changes.trashed is not None:
                meta.explicitly_trashed = changes.trashed
            if blob is not None:
                if meta.is_folder:
                    raise DriveError(400, "badContent", "A folder cannot have content.")
                self._set_content(meta, blob)
            meta.version = next(self._version)
            meta.modified = datetime.now(UTC)
            self._refresh_trashed()
            return replace(meta)

    def delete(self, owner: str, file_id: str) -> None:
        """Delete the file; a folder takes along every item left with no other parent."""
        with self.lock:
            meta = self._own(owner, file_id)
            if meta.is_root:
                raise DriveError(403, "cannotDeleteRoot", "The root folder cannot be deleted.")
            gone = {meta.id}
            changed = True
            while changed:
                changed = False
                for f in self._files.values():
                    if f.id not in gone and f.parents and all(p in gone for p in f.parents):
                        gone.add(f.id)
                        changed = True
            for fid in gone:
                del self._files[fid]
                self._blob_path(fid).unlink(missing_ok=True)
            for f in self._files.values():
                f.parents = [p for p in f.parents if p not in gone]
            self._refresh_trashed()

    # -- internals (lock held) --------------------------------------------------------------

    def _own(self, owner: str, file_id: str) -> FileMeta:
        fid = self.root_id(owner) if file_id == "root" else file_id
        meta = self._files.get(fid)
        if meta is None or meta.owner.lower() != owner.lower():
            raise not_found(file_id)
        return meta

    def _blob_path(self, file_id: str) -> Path:
        return self.blobs / file_id

    def _set_content(self, meta: FileMeta, blob: Blob | None) -> None:
        if meta.is_folder or not meta.has_content:
            if blob is not None:
                self.discard(blob)
            meta.size = meta.md5 = None
            return
        if blob is None:  # a metadata-only insert of a binary type is an empty file
            if meta.size is not None:
                return
            blob = self.spool(())
        os.replace(blob.path, self._blob_path(meta.id))
        meta.size, meta.md5 = blob.size, blob.md5

    def _ancestors(self, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(ids)
        while todo:
            fid = todo.pop()
            if fid not in seen and fid in self._files:
                seen.add(fid)
                todo.extend(self._files[fid].parents)
        return seen

    def _refresh_trashed(self) -> None:
        """Recompute ``trashed`` everywhere after a trash, move or delete (one pass; those are
        rarer than inserts, which set it for the new file alone)."""
        memo: dict[str, bool] = {}

        def effective(fid: str, depth: int = 0) -> bool:
            if fid in memo:
                return memo[fid]
            f = self._files[fid]
            parents = [p for p in f.parents if p in self._files]
            result = f.explicitly_trashed or (
                bool(parents) and depth < 64 and all(effective(p, depth + 1) for p in parents)
            )
            memo[fid] = result
            return result

        for f in self._files.values():
            f.trashed = effective(f.id)
