"""Verified, atomic, incremental pull of a remote tree into a local folder, and the push the
other way.

Every target brings outputs home through `pull_tree`; only the `RemoteTree` differs (a local folder
for the local target, SFTP for Vast). The guarantees, whatever the source:

- nothing half-written: each file is streamed into a temp file beside its destination, checked,
  and only then renamed into place;
- nothing lost: local files whose remote copy vanished are kept, and a file that was being written
  while we copied it leaves the previous local copy untouched (the next pull gets it);
- cheap to repeat: `dest/.launch-pull.json` records what was pulled, so an unchanged file (same
  remote size and mtime, local copy still there) is not read again.

`push_tree` sends local files to a `WritableTree` (SFTP for Vast) by manifest diff: the remote
hashes of the files it already holds are compared with the local ones, only the differing files
move (each to a temp name, then renamed), and what was sent is hashed again on the far side.

The file helpers at the bottom (`sha256_file`, `atomic_write_*`) are shared with other modules.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher.errors import LaunchError

if TYPE_CHECKING:
    from launcher.progress import Meter

CHUNK = 1024 * 1024
RECORD_NAME = ".launch-pull.json"
TMP_SUFFIX = ".launch-tmp"
# A workload writes checkpoints as tmp + rename; these are the shapes of "not finished yet".
_IN_PROGRESS_SUFFIXES = (".tmp", ".partial", ".part", "~")


class PullError(LaunchError):
    """A pull could not be done (bad remote path, local disk problem)."""


class PullVerifyError(PullError):
    """A copied file failed verification (size or hash); nothing was installed for it."""


class RemoteFile(BaseModel):
    """One file of a remote tree, as its listing (or a stat) reports it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative, '/'-separated
    size: int
    mtime_ns: int


@dataclass(eq=False)
class Arriving:
    """One file as a tree sends it: what the far side saw when it began (`file`; None when the
    file was gone by then), then its bytes. Once `chunks` is exhausted, `sha256` holds the far
    side's hash of what it sent (None where that is not cheaply known) and `stable` says whether
    the file stayed as it was while it was sent. A plain class, not a model: a pull of 20,000
    files makes 20,000 of these."""

    path: str
    file: RemoteFile | None
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    sha256: str | None = None
    stable: bool = True


class RemoteTree(Protocol):
    """A read-only tree of files somewhere (a local folder, Drive, a machine with a shell).

    Paths are relative and '/'-separated. `fetch` sends the files asked for in that order, each
    fully read before the next; a tree with a shell on the far side sends them all in one stream
    (`launcher.targets.vast.stream`), a tree of single-file reads implements `FileTree`.
    """

    def list_files(self) -> list[RemoteFile]:
        """Every regular file, recursively. A root that does not exist yet lists as empty."""
        ...

    def fetch(self, files: list[RemoteFile]) -> Generator[Arriving]:
        """Each of `files` (as listed), in order. Closing the generator ends the transfer."""
        ...


class FileTree(ABC):
    """A `RemoteTree` read one file at a time: `open`, then `stat` to see whether the file moved
    while it was read, then `sha256` when the far side can hash cheaply. `open` and `stat` may
    be given a path that vanished since the listing: `open` then raises FileNotFoundError and
    `stat` returns None."""

    @abstractmethod
    def list_files(self) -> list[RemoteFile]: ...

    @abstractmethod
    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A streaming binary reader for one file."""

    @abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """The file's current size and mtime, or None when it no longer exists."""

    @abstractmethod
    def sha256(self, path: str) -> str | None:
        """The remote side's hash when it is cheap, else None."""

    def fetch(self, files: list[RemoteFile]) -> Generator[Arriving]:
        for rf in files:
            arriving = Arriving(path=rf.path, file=rf)
            chunks = self._chunks(rf, arriving)
            arriving.chunks = chunks
            try:
                yield arriving
            finally:
                chunks.close()  # a pull that stopped mid-file closes the file it was reading

    def _chunks(self, rf: RemoteFile, arriving: Arriving) -> Generator[bytes]:
        try:
            with self.open(rf.path) as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            now = self.stat(rf.path)
        except FileNotFoundError:  # renamed away by a writer: like a change
            now = None
        if now is None or now.size != rf.size or now.mtime_ns != rf.mtime_ns:
            arriving.stable = False
            return
        arriving.sha256 = self.sha256(rf.path)


class LocalTree(FileTree):
    """`RemoteTree` over a local directory. Symlinks and special files are not listed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _abs(self, path: str) -> Path:
        return self.root.joinpath(*_safe_parts(path))

    def list_files(self) -> list[RemoteFile]:
        if not self.root.is_dir():
            return []
        found: list[RemoteFile] = []
        for dirpath, _dirnames, filenames in os.walk(self.root):  # does not follow dir symlinks
            for name in filenames:
                full = Path(dirpath, name)
                st = full.lstat()
                if not S_ISREG(st.st_mode):
                    continue
                rel = full.relative_to(self.root).as_posix()
                found.append(RemoteFile(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns))
        found.sort(key=lambda f: f.path)
        return found

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        return self._abs(path).open("rb")

    def stat(self, path: str) -> RemoteFile | None:
        try:
            st = self._abs(path).lstat()
        except FileNotFoundError:
            return None
        return RemoteFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def sha256(self, path: str) -> str | None:
        # Hashing locally costs a second full read; the copy already hashes what it reads.
        return None

    # ---- WritableTree: a local folder as a push destination (tests, local mirrors) -----------

    def hashes(self, paths: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for p in paths:
            full = self._abs(p)
            if full.is_file() and not full.is_symlink():
                found[p] = sha256_file(full)
        return found

    def put_many(
        self, items: list[tuple[Path, str]], advance: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        written: dict[str, str] = {}
        for local, path in items:
            target = self._abs(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
            h = hashlib.sha256()
            try:
                with local.open("rb") as inp, tmp.open("wb") as out:
                    while chunk := inp.read(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        if advance is not None:
                            advance(len(chunk))
                shutil.copymode(local, tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            written[path] = h.hexdigest()
        return written


class PushVerifyError(PullError):
    """A pushed file's remote hash did not match the local one."""


class WritableTree(Protocol):
    """Somewhere files can be pushed to. Paths are relative and '/'-separated."""

    def hashes(self, paths: list[str]) -> dict[str, str]:
        """sha256 of each of `paths` that exists there as a regular file (others are left out)."""
        ...

    def put_many(
        self, items: list[tuple[Path, str]], advance: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        """Write each local file to its path (folders made as needed), each atomically: readers
        never see a part of one. Batched: remote trees do it in one round trip. Returns the
        sha256 the far side computed of each file as it wrote it; `advance` hears of each
        chunk of content sent."""
        ...


class PushResult(BaseModel):
    """What one `push_tree` call did."""

    model_config = ConfigDict(extra="forbid")

    sent: list[str] = []
    bytes_sent: int = 0
    skipped_unchanged: int = 0
    bytes_total: int = 0  # of every file pushed or found unchanged


def tree_files(root: Path) -> dict[str, Path]:
    """Every finished regular file under `root` by relative path (nothing hidden or temp)."""
    return {
        f.path: root.joinpath(*_safe_parts(f.path))
        for f in LocalTree(root).list_files()
        if not is_in_progress(f.path)
    }


def push_tree(
    files: Mapping[str, Path], dest: WritableTree, *, meter: Meter | None = None
) -> PushResult:
    """Make `dest` hold `files` (relative path -> local file): send only what differs, and
    compare the far side's hash of what it wrote with ours.

    Raises:
        PushVerifyError: a sent file's remote hash does not match (the temp was renamed in, so
            the next push sends it again).
    """
    local = {p: sha256_file(files[p]) for p in sorted(files)}
    for p in local:
        _safe_parts(p)
    remote = dest.hashes(list(local))
    todo = [p for p, digest in local.items() if remote.get(p) != digest]
    sizes = {p: files[p].stat().st_size for p in local}
    result = PushResult(
        sent=todo,
        skipped_unchanged=len(local) - len(todo),
        bytes_sent=sum(sizes[p] for p in todo),
        bytes_total=sum(sizes.values()),
    )
    if not todo:
        return result
    if meter is not None:
        meter.start(result.bytes_sent, len(todo))
    try:
        got = dest.put_many([(files[p], p) for p in todo], meter.advance if meter else None)
    finally:
        if meter is not None:
            meter.finish()
    bad = [p for p in todo if got.get(p) != local[p]]
    if bad:
        raise PushVerifyError(
            f"pushed {len(bad)} file(s) whose remote sha256 does not match: {', '.join(bad[:5])}",
            hint="a file changed here while it was sent, or the transfer or the remote disk "
            "corrupts data; try again",
        )
    return result


class PullResult(BaseModel):
    """What one `pull_tree` call did."""

    model_config = ConfigDict(extra="forbid")

    copied: list[str] = []
    skipped_unchanged: int = 0
    bytes_copied: int = 0
    changed_during_copy: list[str] = []


class _Pulled(BaseModel):
    size: int
    mtime_ns: int
    sha256: str


class _PullRecord(BaseModel):
    # Read leniently: the record is only a cache, a newer launcher may add fields.
    model_config = ConfigDict(extra="ignore")

    version: int = 1
    files: dict[str, _Pulled] = {}


def is_in_progress(path: str) -> bool:
    """True for paths a writer has not finished: hidden or temp-looking components."""
    return any(
        part.startswith(".") or part.endswith(_IN_PROGRESS_SUFFIXES) for part in path.split("/")
    )


def pull_tree(
    src: RemoteTree,
    dest: Path,
    *,
    include: Callable[[str], bool] | None = None,
    first: Callable[[str], bool] | None = None,
    meter: Meter | None = None,
) -> PullResult:
    """Bring every finished file of `src` into `dest`, verified and atomically; safe to repeat.

    One listing; the files whose size or mtime differ from the pull record are fetched in one
    `src.fetch` (those `first` picks lead: metrics snapshots before the checkpoints that need
    them). Verified files are installed in batches: one filesystem sync for the batch, then each
    renamed into place (a per-file fsync would cost more than the transfer for small files).
    Paths are handled as strings here: pathlib's parsing cost more than the copy at 20,000
    small files.

    Raises:
        PullVerifyError: a copied file's size or hash did not check out (nothing installed for it).
        PullError: the remote listed an unsafe path, or the local side could not be written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    record_path = dest / RECORD_NAME
    record = _load_record(record_path)
    result = PullResult()
    todo: list[RemoteFile] = []
    base = os.fspath(dest)
    for rf in src.list_files():
        local = _local_path(base, rf.path)  # refuses '..' before anything else
        if is_in_progress(rf.path) or (include is not None and not include(rf.path)):
            continue
        if _unchanged(record.files.get(rf.path), rf, local):
            result.skipped_unchanged += 1
        else:
            todo.append(rf)
    if not todo:
        return result
    if first is not None:
        todo.sort(key=lambda f: not first(f.path))  # stable: path order otherwise
    installer = _Installer(base, record, record_path, result)
    if meter is not None:
        meter.start(sum(f.size for f in todo), len(todo))
    try:
        with contextlib.closing(src.fetch(todo)) as arriving:
            for one in arriving:
                installer.receive(one, meter)
        installer.flush()
    except BaseException:
        # Whatever arrived verified is installed and recorded even when a later file failed or
        # the connection dropped: the next pull does not fetch it again. The first error is
        # the one to report, not one of this cleanup.
        with contextlib.suppress(Exception):
            installer.flush()
        raise
    finally:
        if meter is not None:
            meter.finish()
    return result


def _unchanged(prev: _Pulled | None, rf: RemoteFile, local: str) -> bool:
    if prev is None or prev.size != rf.size or prev.mtime_ns != rf.mtime_ns:
        return False
    try:
        return os.stat(local).st_size == rf.size
    except OSError:
        return False


# A batch is synced and installed at this many files or bytes, and at the end of a pull.
_BATCH_FILES = 20_000
_BATCH_BYTES = 256 << 20


@dataclass
class _Pending:
    tmp: str
    local: str
    file: RemoteFile
    sha256: str


class _Installer:
    """Writes arriving files to temps beside their destinations, checks them, and installs the
    verified ones in batches (one sync, then the renames). Files are written in the order they
    arrive, which is the listing's (sorted, a folder at a time): creating files a folder at a
    time was twice as fast on ext4 as hopping between folders."""

    def __init__(
        self, dest: str, record: _PullRecord, record_path: Path, result: PullResult
    ) -> None:
        self.dest, self.record, self.record_path, self.result = dest, record, record_path, result
        self.pending: list[_Pending] = []
        self.pending_bytes = 0
        self.made: set[str] = set()

    def receive(self, one: Arriving, meter: Meter | None) -> None:
        if one.file is None:  # gone before it could be sent
            self.result.changed_during_copy.append(one.path)
            return
        rf = one.file
        local = _local_path(self.dest, rf.path)
        folder, name = os.path.split(local)
        if folder not in self.made:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise PullError(f"cannot create {folder} for {rf.path}: {e}") from e
            self.made.add(folder)
        # Unique per call: two pulls into one dest must not write (and install) each other's temp.
        tmp = f"{folder}{os.sep}.{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            written, digest = _write_chunks(one.chunks, tmp, rf.mtime_ns, meter)
            installable = self._check(one, rf, written, digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if not installable:
            os.unlink(tmp)
            return
        self.pending.append(_Pending(tmp, local, rf, digest))
        self.pending_bytes += rf.size
        if len(self.pending) >= _BATCH_FILES or self.pending_bytes >= _BATCH_BYTES:
            self.flush()

    def _check(self, one: Arriving, rf: RemoteFile, written: int, digest: str) -> bool:
        """Whether what arrived may be installed: False when the file changed while it was sent
        (the next pull gets it settled); raises when it arrived damaged."""
        if not one.stable:
            self.result.changed_during_copy.append(rf.path)
            return False
        if written != rf.size:
            raise PullVerifyError(
                f"pulled {rf.path}: got {written} bytes, the remote listed {rf.size}",
                hint="the connection may have dropped; pull again",
            )
        if one.sha256 is not None and one.sha256.lower() != digest:
            raise PullVerifyError(
                f"pulled {rf.path}: sha256 {digest} does not match the remote's {one.sha256}",
                hint="pull again; if it persists, the remote disk or the transfer corrupts data",
            )
        return True

    def flush(self) -> None:
        """Make the batch durable, rename it into place, make the renames durable, then record
        it: after a crash a recorded file is never an unsynced one, and a pull killed after a
        batch does not fetch that batch again."""
        if not self.pending:
            return
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        done = 0
        try:
            try:
                _sync_files([p.tmp for p in batch])
                for p in batch:
                    os.replace(p.tmp, p.local)
                    done += 1
                _sync_files(sorted({os.path.dirname(p.local) for p in batch}))
            except OSError as e:
                raise PullError(f"cannot install pulled files under {self.dest}: {e}") from e
        finally:
            for p in batch[done:]:  # those a failure left uninstalled
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p.tmp)
            for p in batch[:done]:
                self.record.files[p.file.path] = _Pulled.model_construct(
                    size=p.file.size, mtime_ns=p.file.mtime_ns, sha256=p.sha256
                )
                self.result.copied.append(p.file.path)
                self.result.bytes_copied += p.file.size
            if done:
                _save_record(self.record_path, self.record)


def _write_chunks(
    chunks: Iterator[bytes], tmp: str, mtime_ns: int, meter: Meter | None
) -> tuple[int, str]:
    """Write what arrives to `tmp`; (bytes, sha256). A local write failure is a PullError: the
    errors of the transfer itself (OSError, EOFError) stay as they are, for a retry to see."""
    h = hashlib.sha256()
    written = 0
    try:
        # 0o666 through the umask, like a plain open()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise PullError(f"cannot write {os.path.dirname(tmp)}: {e}") from e
    try:
        for chunk in chunks:
            h.update(chunk)
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as e:
                raise PullError(f"cannot write {os.path.dirname(tmp)}: {e}") from e
            written += len(chunk)
            if meter is not None:
                meter.advance(len(chunk))
        os.utime(fd, ns=(time.time_ns(), mtime_ns))
    finally:
        os.close(fd)
    return written, h.hexdigest()


def _sync_files(paths: list[str]) -> None:
    """Make `paths` durable. One syncfs(2) covers a whole batch on Linux (paths share the pull's
    filesystem); elsewhere each is fsynced."""
    if not paths:
        return
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(paths[0], os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        _fsync_path(path)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return cast("Callable[[int], int]", ctypes.CDLL(None, use_errno=True).syncfs)
    except (OSError, AttributeError):
        return None


def _load_record(path: Path) -> _PullRecord:
    # The stdlib's json both ways: it keeps a non-UTF-8 file name (a lone surrogate) as the
    # same escape, where pydantic's JSON would turn it into U+FFFD and never match it again.
    try:
        return _PullRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        # A missing or damaged record only costs a full re-pull; never fail over it.
        return _PullRecord()


def _save_record(path: Path, record: _PullRecord) -> None:
    try:
        atomic_write_text(path, json.dumps(record.model_dump(), indent=1) + "\n")
    except OSError as e:
        raise PullError(f"cannot write {path}: {e}") from e


def _safe_parts(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("/"))
    if any(p in ("..", ".", "") for p in parts) or "\0" in path:
        raise PullError(f"refusing remote path {path!r}: not a plain relative path")
    return parts


def _local_path(base: str, path: str) -> str:
    """`path` (relative, '/'-separated, checked) under the local folder `base`."""
    parts = _safe_parts(path)
    return f"{base}/{path}" if os.sep == "/" else os.path.join(base, *parts)


# --- shared file helpers ---------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old content or the new, never a mix.

    The temp file lives in the same directory (os.replace is only atomic within a filesystem)
    and has a unique name, so concurrent writers of one path do not clobber each other's temp.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0o666 through the umask, like a plain open(); mkstemp's 0o600 would surprise readers.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)  # the rename itself


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_path(path: str | Path) -> None:
    # A file's data, or a folder's renames, made durable; not every platform/filesystem allows
    # opening or fsyncing a folder.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
