"""The bundle: a reproducible, content-addressed .tar.gz that carries a job's workload anywhere.

Layout: `manifest.json` first (so a streaming reader can verify as it goes), then every other
member sorted by name: the top-level extra files (agent.py, job.json, ...) and the workload folder
under `workload/`. The manifest lists size and sha256 of every file member except itself.

Reproducible: member metadata is normalized (mtime 0, uid/gid 0, no owner names, mode 0o644 or
0o755) and the gzip header carries no name or time, so the same tree gives the same bytes and the
same digest on every machine with the same zlib, whatever the files' mtimes or owners.

Which workload files go in is decided by `launcher.bundle.select` (.gitignore, .launchignore,
never credentials); its public names are re-exported here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher.bundle.select import (
    SECRET_PATTERNS,
    BundleError,
    Selection,
    iter_bundle_files,
    looks_like_secret,
    select_bundle_files,
)
from launcher.sync import CHUNK, sha256_file

WORKLOAD_DIR = "workload"
MANIFEST_NAME = "manifest.json"
LARGE_BUNDLE_BYTES = 100 * 1024 * 1024


class FileEntry(BaseModel):
    """One file of the manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int
    sha256: str


class Bundle(BaseModel):
    """A built bundle in the cache. `skipped_secrets` and `warnings` are for the caller to show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    digest: str  # sha256 hex of the archive bytes; also its file name in the cache
    size: int
    manifest: dict[str, FileEntry]
    skipped_secrets: list[str] = []
    warnings: list[str] = []


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    files: dict[str, FileEntry]


def build_bundle(workload_dir: Path, cache_dir: Path, extra_files: Mapping[str, bytes]) -> Bundle:
    """Build (or reuse) the bundle of `workload_dir` plus top-level `extra_files`.

    The archive lands in `cache_dir/<digest>.tar.gz`, written atomically; an existing one with
    that digest is reused.

    Raises:
        BundleError: the workload folder is missing, an extra file name is not a plain top-level
            name, or a file changed while it was being bundled.
    """
    selection = select_bundle_files(workload_dir)
    for name in extra_files:
        _check_extra_name(name)
    entries: dict[str, FileEntry] = {}
    sources: dict[str, Path | bytes] = {}
    for rel, path in selection.files:
        size, digest = _size_and_hash(path)
        entries[f"{WORKLOAD_DIR}/{rel}"] = FileEntry(size=size, sha256=digest)
        sources[f"{WORKLOAD_DIR}/{rel}"] = path
    for name, data in extra_files.items():
        entries[name] = FileEntry(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        sources[name] = data
    manifest = dict(sorted(entries.items()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".bundle.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        _write_archive(tmp, manifest, sources)
        digest, size = sha256_file(tmp), tmp.stat().st_size
        final = cache_dir / f"{digest}.tar.gz"
        if final.is_file() and final.stat().st_size == size:
            tmp.unlink()
        else:
            os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write the bundle into {cache_dir}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    warnings = list(selection.warnings)
    if size > LARGE_BUNDLE_BYTES:
        warnings.append(_large_warning(size, manifest))
    return Bundle(
        path=final,
        digest=digest,
        size=size,
        manifest=manifest,
        skipped_secrets=selection.skipped_secrets,
        warnings=warnings,
    )


def _check_extra_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..", WORKLOAD_DIR, MANIFEST_NAME):
        raise BundleError(f"bundle extra file {name!r} must be a plain top-level file name")


def _size_and_hash(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise BundleError(f"cannot read workload file {path}: {e}") from e
    return size, h.hexdigest()


def _write_archive(
    tmp: Path, manifest: dict[str, FileEntry], sources: Mapping[str, Path | bytes]
) -> None:
    manifest_doc = {"files": {k: v.model_dump() for k, v in manifest.items()}}
    manifest_bytes = (json.dumps(manifest_doc, sort_keys=True, indent=1) + "\n").encode()
    dirs = {WORKLOAD_DIR}
    for name in manifest:
        dirs.update(str(p) for p in PurePosixPath(name).parents if str(p) != ".")
    members = sorted([*dirs, *manifest])
    with tmp.open("wb") as raw:
        # filename="" and mtime=0 keep the temp file's name and the time out of the gzip header;
        # the level is fixed because it is part of the digest.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST_NAME, len(manifest_bytes)), io.BytesIO(manifest_bytes))
                for name in members:
                    if name in dirs:
                        tar.addfile(_info(name, 0, directory=True))
                    else:
                        _add_member(tar, name, sources[name], manifest[name])
        raw.flush()
        os.fsync(raw.fileno())


def _add_member(tar: tarfile.TarFile, name: str, source: Path | bytes, entry: FileEntry) -> None:
    if isinstance(source, bytes):
        tar.addfile(_info(name, entry.size), io.BytesIO(source))
        return
    executable = bool(source.stat().st_mode & 0o111)
    with source.open("rb") as f:
        reader = _HashingReader(f)
        try:
            tar.addfile(_info(name, entry.size, executable=executable), reader)
        except OSError as e:  # tarfile's "unexpected end of data": the file shrank
            raise _changed(name) from e
    if reader.hash.hexdigest() != entry.sha256:
        raise _changed(name)


def _changed(name: str) -> BundleError:
    return BundleError(
        f"{name} changed while the bundle was being built",
        hint="stop whatever writes into the workload folder, or .launchignore its output",
    )


def _info(
    name: str, size: int, *, directory: bool = False, executable: bool = False
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory or executable else 0o644
    return info


class _HashingReader:
    """Hashes exactly what tarfile reads, so the manifest can be checked against the archive."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.hash.update(data)
        return data


def _large_warning(size: int, manifest: Mapping[str, FileEntry]) -> str:
    biggest = sorted(manifest.items(), key=lambda kv: kv[1].size, reverse=True)[:3]
    listed = ", ".join(f"{name} ({entry.size / 2**20:.0f} MB)" for name, entry in biggest)
    return (
        f"the bundle is {size / 2**20:.0f} MB: data or weights probably got in (largest: "
        f"{listed}); list them in .launchignore and use the job's inputs instead"
    )


# --- extract -----------------------------------------------------------------------------------


def extract_bundle(archive: Path, dest: Path) -> None:
    """Extract a bundle into `dest`, refusing unsafe members and verifying every file.

    All member headers are checked before anything is written. Each file is written to a temp
    file, checked against manifest.json, then renamed into place.

    Raises:
        BundleError: an absolute or `..` path, a link or device, a duplicate member, a file the
            manifest does not list (or the reverse), a size/hash mismatch, or a damaged archive.
    """
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = tar.getmembers()
            _check_members(members)
            manifest = _read_manifest(tar, members)
            files = {m.name for m in members if m.isreg() and m.name != MANIFEST_NAME}
            if files != set(manifest):
                odd = sorted(files.symmetric_difference(manifest))
                raise BundleError(f"{archive}: members and manifest.json disagree on {odd[:5]}")
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for member in members:
                target = root.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    _check_inside(target, root, member.name)
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    _extract_file(tar, member, target, root, manifest.get(member.name))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BundleError(f"cannot extract {archive}: {e}") from e


def _check_members(members: list[tarfile.TarInfo]) -> None:
    seen: set[str] = set()
    for m in members:
        name = m.name
        if (
            name.startswith("/")
            or PurePosixPath(name).as_posix() != name
            or ".." in name.split("/")
        ):
            raise BundleError(f"refusing bundle member {name!r}: not a plain relative path")
        if not (m.isreg() or m.isdir()):
            raise BundleError(
                f"refusing bundle member {name!r}: links and devices are not allowed"
            )
        if name in seen:
            raise BundleError(f"refusing bundle member {name!r}: it appears twice")
        seen.add(name)


def _read_manifest(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> dict[str, FileEntry]:
    member = next((m for m in members if m.name == MANIFEST_NAME and m.isreg()), None)
    f = tar.extractfile(member) if member is not None else None
    if f is None:
        raise BundleError(f"the bundle has no {MANIFEST_NAME}")
    try:
        return _Manifest.model_validate_json(f.read()).files
    except ValidationError as e:
        raise BundleError(f"the bundle's {MANIFEST_NAME} is invalid: {e}") from e


def _check_inside(path: Path, root: Path, name: str) -> None:
    # A symlink already present in dest could otherwise redirect a write outside it.
    # resolve() is non-strict: it follows the links that exist and keeps the rest as written.
    if not path.resolve().is_relative_to(root):
        raise BundleError(f"refusing bundle member {name!r}: it would land outside {root}")


def _extract_file(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path,
    root: Path,
    entry: FileEntry | None,
) -> None:
    _check_inside(target.parent, root, member.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None  # regular members always have data
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.launch-tmp")
    try:
        h = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if entry is not None and (size != entry.size or h.hexdigest() != entry.sha256):
            raise BundleError(f"bundle member {member.name} does not match manifest.json")
        tmp.chmod(0o755 if member.mode & 0o111 else 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "SECRET_PATTERNS",
    "Bundle",
    "BundleError",
    "FileEntry",
    "Selection",
    "build_bundle",
    "extract_bundle",
    "iter_bundle_files",
    "looks_like_secret",
    "select_bundle_files",
]
