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

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import BinaryIO, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher.errors import LaunchError

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


class RemoteTree(Protocol):
    """A read-only tree of files somewhere (local folder, SFTP, ...).

    Paths are relative and '/'-separated. `open` and `stat` may be given a path that vanished since
    the listing: `open` then raises FileNotFoundError and `stat` returns None.
    """

    def list_files(self) -> list[RemoteFile]:
        """Every regular file, recursively. A root that does not exist yet lists as empty."""
        ...

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        """A streaming binary reader for one file."""
        ...

    def stat(self, path: str) -> RemoteFile | None:
        """The file's current size and mtime, or None when it no longer exists."""
        ...

    def sha256(self, path: str) -> str | None:
        """The remote side's hash when it is cheap (e.g. `sha256sum` over ssh), else None."""
        ...


class LocalTree:
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

    def put_many(self, items: list[tuple[Path, str]]) -> None:
        for local, path in items:
            target = self._abs(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
            try:
                shutil.copyfile(local, tmp)
                shutil.copymode(local, tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise


class PushVerifyError(PullError):
    """A pushed file's remote hash did not match the local one."""


class WritableTree(Protocol):
    """Somewhere files can be pushed to. Paths are relative and '/'-separated."""

    def hashes(self, paths: list[str]) -> dict[str, str]:
        """sha256 of each of `paths` that exists there as a regular file (others are left out)."""
        ...

    def put_many(self, items: list[tuple[Path, str]]) -> None:
        """Write each local file to its path (folders made as needed), each atomically: readers
        never see a part of one. Batched: remote trees do it in one round trip."""
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


def push_tree(files: Mapping[str, Path], dest: WritableTree) -> PushResult:
    """Make `dest` hold `files` (relative path -> local file): send only what differs.

    Raises:
        PushVerifyError: a sent file's remote hash does not match (the temp was renamed in, so
            the next push sends it again).
    """
    local = {p: sha256_file(files[p]) for p in sorted(files)}
    for p in local:
        _safe_parts(p)
    remote = dest.hashes(list(local))
    todo = [p for p, digest in local.items() if remote.get(p) != digest]
    result = PushResult(skipped_unchanged=len(local) - len(todo))
    if todo:
        dest.put_many([(files[p], p) for p in todo])
    result.sent = todo
    result.bytes_sent = sum(files[p].stat().st_size for p in todo)
    result.bytes_total = sum(files[p].stat().st_size for p in local)
    got = dest.hashes(todo) if todo else {}
    bad = [p for p in todo if got.get(p) != local[p]]
    if bad:
        raise PushVerifyError(
            f"pushed {len(bad)} file(s) whose remote sha256 does not match: {', '.join(bad[:5])}",
            hint="the transfer or the remote disk corrupts data; try again",
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
        part.startswith(".") or part.endswith(_IN_PROGRESS_SUFFIXES)
        for part in PurePosixPath(path).parts
    )


def pull_tree(
    src: RemoteTree, dest: Path, *, include: Callable[[str], bool] | None = None
) -> PullResult:
    """Bring every finished file of `src` into `dest`, verified and atomically; safe to repeat.

    Raises:
        PullVerifyError: a copied file's size or hash did not check out (nothing installed for it).
        PullError: the remote listed an unsafe path, or the local side could not be written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    record_path = dest / RECORD_NAME
    record = _load_record(record_path)
    result = PullResult()
    dirty = False
    try:
        for rf in src.list_files():
            local = dest.joinpath(*_safe_parts(rf.path))  # refuses '..' before anything else
            if is_in_progress(rf.path) or (include is not None and not include(rf.path)):
                continue
            if _unchanged(record.files.get(rf.path), rf, local):
                result.skipped_unchanged += 1
                continue
            digest = _copy_one(src, rf, local)
            if digest is None:
                result.changed_during_copy.append(rf.path)
                continue
            record.files[rf.path] = _Pulled(size=rf.size, mtime_ns=rf.mtime_ns, sha256=digest)
            dirty = True
            result.copied.append(rf.path)
            result.bytes_copied += rf.size
    finally:
        # Saved even when a later file failed, so the files already installed are not re-read.
        if dirty:
            atomic_write_text(record_path, record.model_dump_json(indent=1) + "\n")
    return result


def _unchanged(prev: _Pulled | None, rf: RemoteFile, local: Path) -> bool:
    if prev is None or prev.size != rf.size or prev.mtime_ns != rf.mtime_ns:
        return False
    try:
        return local.stat().st_size == rf.size
    except OSError:
        return False


def _copy_one(src: RemoteTree, rf: RemoteFile, local: Path) -> str | None:
    """Copy one file; its sha256 when installed, None when the source changed under us."""
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"cannot create {local.parent} for {rf.path}: {e}") from e
    # Unique per call: two pulls into one dest must not write (and install) each other's temp.
    tmp = local.with_name(f".{local.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        written, digest = _stream_to(src, rf.path, tmp)
        now = src.stat(rf.path)
        if now is None or now.size != rf.size or now.mtime_ns != rf.mtime_ns:
            tmp.unlink()
            return None
        if written != rf.size:
            raise PullVerifyError(
                f"pulled {rf.path}: got {written} bytes, the remote listed {rf.size}",
                hint="the connection may have dropped; pull again",
            )
        remote_digest = src.sha256(rf.path)
        if remote_digest is not None and remote_digest.lower() != digest:
            raise PullVerifyError(
                f"pulled {rf.path}: sha256 {digest} does not match the remote's {remote_digest}",
                hint="pull again; if it persists, the remote disk or the transfer corrupts data",
            )
        os.utime(tmp, ns=(time.time_ns(), rf.mtime_ns))
        os.replace(tmp, local)
    except FileNotFoundError:
        # The source vanished between listing and open (a writer's rename): like a change.
        tmp.unlink(missing_ok=True)
        return None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _stream_to(src: RemoteTree, path: str, tmp: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    written = 0
    with src.open(path) as inp, tmp.open("wb") as out:
        while chunk := inp.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
            written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return written, h.hexdigest()


def _load_record(path: Path) -> _PullRecord:
    try:
        return _PullRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        # A missing or damaged record only costs a full re-pull; never fail over it.
        return _PullRecord()


def _safe_parts(path: str) -> tuple[str, ...]:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise PullError(f"refusing remote path {path!r}: not a plain relative path")
    return parts


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
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform/filesystem allows opening a dir.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
