"""Remote trees on an instance, over the SSH connection of `ssh.py`: `SftpTree` (what pulls
read) and `SftpDest` (what pushes write).

Files of STREAM_MIN bytes or more are read through an exec channel running the instance's
python3, which sends exactly the listed number of bytes and hashes them as it reads: about twice
SFTP's throughput in paramiko (no request/response per 32 KB), and the remote hash comes with
the data instead of from a second read of the file (bench/vast_sync.py has the figures).
Smaller files, listings and stats use SFTP.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import stat
import tarfile
from collections.abc import Generator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import paramiko

from launcher.errors import TargetError
from launcher.sync import RemoteFile
from launcher.targets.vast.ssh import SshConn

STREAM_MIN = 1 << 20


class SftpTree:
    """`launcher.sync.RemoteTree` over SSH, rooted at a remote folder."""

    def __init__(self, conn: SshConn, root: str) -> None:
        self.conn = conn
        self.root = root.rstrip("/")
        self._listed: dict[str, RemoteFile] = {}
        self._stats: dict[str, RemoteFile] = {}
        self._streamed: dict[str, str] = {}  # path -> sha256 the sender computed

    def _abs(self, path: str) -> str:
        return f"{self.root}/{path}"

    def list_files(self) -> list[RemoteFile]:
        def op() -> list[RemoteFile]:
            sftp = self.conn.sftp()
            found: list[RemoteFile] = []
            todo = [""]
            while todo:
                rel = todo.pop()
                try:
                    entries = sftp.listdir_attr(self._abs(rel) if rel else self.root)
                except FileNotFoundError:
                    continue
                for a in entries:
                    child = f"{rel}/{a.filename}" if rel else a.filename
                    mode = a.st_mode or 0
                    if stat.S_ISDIR(mode):
                        todo.append(child)
                    elif stat.S_ISREG(mode):
                        found.append(_remote_file(child, a))
            found.sort(key=lambda f: f.path)
            return found

        found = self.conn.retry("list", op)
        self._listed = {f.path: f for f in found}
        return found

    @contextlib.contextmanager
    def open(self, path: str) -> Generator[BinaryIO]:
        self._streamed.pop(path, None)
        listed = self._listed.get(path)
        if listed is not None and listed.size >= STREAM_MIN:
            with self._stream(path, listed.size) as f:
                yield f
            return
        f = self.conn.sftp().open(self._abs(path), "rb")
        try:
            f.prefetch()
            yield cast("BinaryIO", f)
        finally:
            f.close()

    @contextlib.contextmanager
    def _stream(self, path: str, size: int) -> Generator[BinaryIO]:
        """The first `size` bytes of the file from the sender script; its hash of them is kept
        for `sha256` when it ends cleanly. A file gone before the start reads as empty."""
        cmd = f"python3 -c {shlex.quote(_SEND)} {shlex.quote(self._abs(path))} {size}"
        # a stalled connection raises (a timeout is an OSError) instead of hanging the pull
        _in, out, err = self.conn.connect().exec_command(cmd, timeout=120)
        try:
            yield cast("BinaryIO", out)
        finally:
            channel = out.channel
            if out.read(1) == b"":  # the reader took every byte: the hash follows
                digest = err.read().decode(errors="replace").strip()
                if channel.recv_exit_status() == 0 and len(digest) == 64:
                    self._streamed[path] = digest
            channel.close()

    def stat(self, path: str) -> RemoteFile | None:
        def op() -> RemoteFile | None:
            try:
                found = _remote_file(path, self.conn.sftp().stat(self._abs(path)))
            except FileNotFoundError:
                return None
            self._stats[path] = found
            return found

        return self.conn.retry("stat", op)

    def sha256(self, path: str) -> str | None:
        """The hash of what the last `stat` saw: a log still being appended to must not fail
        the check of the part we copied, so only that many bytes are hashed, and a file
        rewritten since (another mtime) gives None (not cheaply known). A streamed file's hash
        is the sender's (pull_tree has checked size and mtime did not move meanwhile)."""
        streamed = self._streamed.pop(path, None)
        if streamed is not None:
            return streamed
        seen = self._stats.get(path)
        if seen is None:
            return None
        q = shlex.quote(self._abs(path))
        cmd = f"head -c {seen.size} {q} | sha256sum && stat -c %Y {q}"
        code, out, _err = self.conn.run(cmd, timeout=600)
        words = out.split()
        if code != 0 or len(words) < 3 or len(words[0]) != 64:
            return None
        if words[-1] != str(seen.mtime_ns // 1_000_000_000):
            return None
        return words[0]


# Run by the instance's python3: send the first N bytes of a file to stdout, their sha256 to
# stderr at the end (exit 2, nothing sent, when the file cannot be opened).
_SEND = """
import hashlib, sys
try:
    f = open(sys.argv[1], "rb")
except OSError:
    sys.exit(2)
left, h, out = int(sys.argv[2]), hashlib.sha256(), sys.stdout.buffer
while left > 0:
    block = f.read(min(left, 1 << 20))
    if not block:
        break
    h.update(block)
    out.write(block)
    left -= len(block)
out.flush()
sys.stderr.write(h.hexdigest() + "\\n")
"""


class SftpDest:
    """`launcher.sync.WritableTree` over SSH, in one remote python3 call per step (the agent
    needs python3 there anyway): hash the files asked about; receive a tar stream of the files
    to write, each to a temp name then renamed, modes kept. One round trip for any number of
    files: a bundle of a thousand small files must not cost a thousand SFTP round trips."""

    def __init__(self, conn: SshConn, root: str) -> None:
        self.conn = conn
        self.root = root.rstrip("/")

    def hashes(self, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        cmd = f"python3 -c {shlex.quote(_HASHES)} {shlex.quote(self.root)}"
        out = self.conn.check(cmd, timeout=600, stdin=json.dumps(paths).encode())
        return cast("dict[str, str]", json.loads(out))

    def put_many(self, items: list[tuple[Path, str]]) -> None:
        cmd = f"python3 -c {shlex.quote(_UNTAR)} {shlex.quote(self.root)}"

        def op() -> None:
            inp, out, err = self.conn.connect().exec_command(cmd, timeout=3600)
            with tarfile.open(fileobj=cast("BinaryIO", inp), mode="w|") as tar:
                for local, path in items:
                    tar.add(str(local), arcname=path, recursive=False)
            inp.channel.shutdown_write()
            code = out.channel.recv_exit_status()
            if code != 0:
                why = err.read().decode(errors="replace").strip()[-500:]
                raise TargetError(f"writing files under {self.root} failed ({code}): {why}")

        self.conn.retry("put", op)


# Run by the instance's python3; paths arrive as JSON on stdin.
_HASHES = """
import hashlib, json, os, sys
out = {}
for p in json.load(sys.stdin):
    f = os.path.join(sys.argv[1], p)
    if os.path.isfile(f) and not os.path.islink(f):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[p] = h.hexdigest()
print(json.dumps(out))
"""
# Run by the instance's python3: unpack a tar stream from stdin under argv[1], each regular file
# through a temp name; anything else, or a path leaving the root, is refused.
_UNTAR = """
import os, sys, tarfile
root = sys.argv[1]
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    for m in t:
        if m.name.startswith("/") or ".." in m.name.split("/") or not m.isreg():
            sys.exit("refusing " + m.name)
        dest = os.path.join(root, m.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        src, tmp = t.extractfile(m), dest + ".launch-tmp"
        with open(tmp, "wb") as f:
            for block in iter(lambda: src.read(1 << 20), b""):
                f.write(block)
        os.chmod(tmp, m.mode & 0o777)
        os.replace(tmp, dest)
"""


def _remote_file(path: str, a: paramiko.SFTPAttributes) -> RemoteFile:
    mtime = a.st_mtime or 0
    return RemoteFile(
        path=str(PurePosixPath(path)), size=a.st_size or 0, mtime_ns=int(mtime * 1_000_000_000)
    )
