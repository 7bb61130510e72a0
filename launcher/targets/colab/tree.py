"""Reading Drive files home: a checked reader, and the `RemoteTree` a pull walks.

`pull_tree` (launcher/sync.py) does the verified, atomic install; this module gives it Drive's
side. A file is read in CHUNK-sized ranged GETs on one authorised connection and checked against
the size and md5 Drive listed. The notebook's manifest (heartbeat.json "files": size, mtime and
md5 of each file it copied) gives each file the mtime it had on the Colab VM, so checkpoints keep
their order here whatever order Drive received them in.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, BinaryIO

from launcher.sync import FileTree, PullVerifyError, RemoteFile

if TYPE_CHECKING:
    from launcher.targets.colab.drive import Drive, DriveFile

CHUNK = 16 * 1024 * 1024
Manifest = Mapping[str, tuple[int, int, str]]  # path -> (size, mtime_ns, md5) on the VM


class Reader(io.RawIOBase):
    def __init__(self, drive: Drive, f: DriveFile, verified: set[str] | None = None) -> None:
        self.drive, self.f = drive, f
        self.pos = 0
        self.md5 = hashlib.md5()
        self.verified = verified  # gets the file's id once its bytes matched Drive's md5

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.f.size:
            self._check()
            return b""
        want = CHUNK if size < 0 else min(size, CHUNK)
        end = min(self.f.size, self.pos + want) - 1
        data = self.drive.read_range(self.f.id, self.pos, end)
        if not data:
            raise PullVerifyError(
                f"Drive file {self.f.title} ended at {self.pos} of {self.f.size} bytes",
                hint="it changed while it was pulled; pull again",
            )
        self.pos += len(data)
        self.md5.update(data)
        return data

    def _check(self) -> None:
        if self.f.md5 and self.md5.hexdigest() == self.f.md5.lower():
            if self.verified is not None:
                self.verified.add(self.f.id)
            return
        if self.f.md5:
            now = self.drive.get(self.f.id)
            if now is None or (now.md5, now.modified_ns) != (self.f.md5, self.f.modified_ns):
                # rewritten while we read it: like a file that changed during a copy, the
                # next pull gets the new one
                raise FileNotFoundError(self.f.title)
            raise PullVerifyError(
                f"pulled {self.f.title}: md5 {self.md5.hexdigest()} does not match Drive's "
                f"{self.f.md5}",
                hint="pull again; if it persists, the transfer corrupts data",
            )


class DriveTree(FileTree):
    """`RemoteTree` (launcher/sync.py) over a Drive folder: `pull_tree` brings it home, verified
    and atomic like every other target's pull."""

    def __init__(self, drive: Drive, folder_id: str, manifest: Manifest | None = None) -> None:
        self.drive, self.folder_id = drive, folder_id
        self.manifest: Manifest = manifest or {}
        self._files: dict[str, DriveFile] = {}
        self._verified: set[str] = set()

    def _mtime(self, path: str, f: DriveFile) -> int:
        """The VM's mtime when the manifest describes this very content, else Drive's."""
        entry = self.manifest.get(path)
        if entry is not None and entry[0] == f.size and (not f.md5 or entry[2] == f.md5):
            return entry[1]
        return f.modified_ns

    def list_files(self) -> list[RemoteFile]:
        self._files = self.drive.tree(self.folder_id)
        return [
            RemoteFile(path=p, size=f.size, mtime_ns=self._mtime(p, f))
            for p, f in sorted(self._files.items())
        ]

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        f = self._files.get(path)
        if f is None:
            raise FileNotFoundError(path)
        self._verified.discard(f.id)
        return self.drive.open(f, self._verified)

    def stat(self, path: str) -> RemoteFile | None:
        known = self._files.get(path)
        if known is not None and known.id in self._verified:
            # the bytes just read have the md5 the listing gave: the listed version, unchanged
            return RemoteFile(path=path, size=known.size, mtime_ns=self._mtime(path, known))
        now = self.drive.get(known.id) if known is not None else None
        if now is None or now.trashed:
            return None
        return RemoteFile(path=path, size=now.size, mtime_ns=self._mtime(path, now))

    def sha256(self, path: str) -> str | None:
        return None  # Drive has md5 only: the reader checks it
