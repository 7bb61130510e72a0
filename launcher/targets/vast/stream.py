"""A run folder on the instance read as one stream: `ShellTree`, the `RemoteTree` pulls use.

SFTP costs several round trips per file (open, fstat, reads, close, stat, then a hash), so a
folder of 2,000 small files took most of a minute and would take most of an hour from a host
150 ms away. Here the instance's python3 does the walking and the reading:

1. `list_files`: one exec channel; the sender walks the folder and answers with one JSON listing.
2. `fetch`: one exec channel; the launcher writes the paths it wants, the sender answers with a
   frame per path, back to back: a header (sent, or gone), exactly the size it saw at open, then
   the sha256 of what it sent and whether the file stayed as it was meanwhile (same inode, size
   and mtime afterwards, no short read). `pull_tree` hashes what arrives, compares, and installs
   only settled files.

Big and small files take the same stream (no per-file round trip, and the hash comes with the
data instead of from a second read). Symlinks are followed only to regular files inside the
folder; a link that leads out of it, or to a folder, is left out.
"""

from __future__ import annotations

import json
import shlex
import struct
from collections.abc import Generator, Iterator
from typing import cast

import paramiko

from launcher.errors import TargetError
from launcher.sync import Arriving, RemoteFile
from launcher.targets.vast.ssh import SshConn

_RECV = 1 << 20
# a frame starts with _SENT then size and mtime_ns (negative before 1970), or is a lone _GONE
_SIZES = struct.Struct(">Qq")
_LEN = struct.Struct(">Q")
_TAIL = 33  # sha256 digest + 1 (unchanged while sent) or 0
_SENT, _GONE = b"\0", b"\1"


class StreamDroppedError(EOFError):
    """The stream ended early without the sender failing: a dropped connection (transient)."""


class ShellTree:
    """`launcher.sync.RemoteTree` over SSH, rooted at a remote folder, read by the instance's
    python3 (the agent needs it there anyway)."""

    def __init__(self, conn: SshConn, root: str) -> None:
        self.conn = conn
        self.root = root.rstrip("/")

    def _cmd(self, mode: str) -> str:
        return f"python3 -c {shlex.quote(_SENDER)} {mode} {shlex.quote(self.root)}"

    def list_files(self) -> list[RemoteFile]:
        def op() -> list[RemoteFile]:
            chan = self._open("list")
            try:
                frames = _Frames(chan)
                (n,) = _LEN.unpack(frames.exact(_LEN.size))
                rows = cast("list[list[object]]", json.loads(frames.exact(n)))
            finally:
                chan.close()
            return [
                RemoteFile(path=str(p), size=cast("int", s), mtime_ns=cast("int", m))
                for p, s, m in rows
            ]

        return self.conn.retry("list", op)

    def fetch(self, files: list[RemoteFile]) -> Generator[Arriving]:
        if not files:
            return
        chan = self._open("send")
        try:
            wanted = json.dumps([f.path for f in files]).encode()
            chan.sendall(_LEN.pack(len(wanted)) + wanted)
            chan.shutdown_write()
            frames = _Frames(chan)
            for f in files:
                kind = frames.exact(1)
                if kind == _GONE:
                    yield Arriving(path=f.path, file=None)
                    continue
                if kind != _SENT:
                    raise TargetError(
                        f"the instance's file stream is out of step at {f.path} "
                        f"(frame byte {kind!r}): something else wrote to the sender's output"
                    )
                size, mtime_ns = _SIZES.unpack(frames.exact(_SIZES.size))
                arriving = Arriving(
                    path=f.path, file=RemoteFile(path=f.path, size=size, mtime_ns=mtime_ns)
                )
                arriving.chunks = _body(frames, size, arriving)
                yield arriving
                for _ in arriving.chunks:  # a consumer that stopped early: keep the frames aligned
                    pass
        finally:
            chan.close()

    def _open(self, mode: str) -> paramiko.Channel:
        return self.conn.exec_channel(self._cmd(mode), timeout=120)


def _body(frames: _Frames, size: int, arriving: Arriving) -> Iterator[bytes]:
    yield from frames.body(size)
    tail = frames.exact(_TAIL)
    arriving.sha256 = tail[:32].hex()
    arriving.stable = tail[32:] == b"\1"


class _Frames:
    """Exact reads over a channel's stdout, with its own buffer (paramiko's file wrapper costs
    a lock and a loop per call, which shows at 20,000 small frames)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.data = b""
        self.pos = 0

    def _recv(self) -> bytes:
        got = self.chan.recv(_RECV)
        if got:
            return got
        why = SshConn.failure_of(self.chan)
        if why is not None:
            raise TargetError(f"reading the run folder on the instance failed: {why}")
        raise StreamDroppedError("the instance's stream ended early (connection dropped?)")

    def exact(self, n: int) -> bytes:
        end = self.pos + n
        if end <= len(self.data):
            out = self.data[self.pos : end]
            self.pos = end
            return out
        parts = [self.data[self.pos :]]
        have = len(parts[0])
        while have < n:
            got = self._recv()
            parts.append(got)
            have += len(got)
        joined = b"".join(parts)
        self.data, self.pos = joined, n
        return joined[:n]

    def body(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if self.pos < len(self.data):
                piece = self.data[self.pos : self.pos + n]
                self.pos += len(piece)
            else:
                got = self._recv()
                piece, self.data, self.pos = got[:n], got, min(n, len(got))
            n -= len(piece)
            yield piece


# Run by the instance's python3 (3.8 or later): `list ROOT` or `send ROOT` (see the module
# docstring for the frames). Nothing outside ROOT is read.
_SENDER = r"""
import hashlib, json, os, stat, struct, sys
mode, root = sys.argv[1], os.path.realpath(sys.argv[2])
out = os.fdopen(os.dup(1), "wb", 1 << 20)

def inside(real):
    return real.startswith(root + os.sep)

def walk(rel, path, found):
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for e in entries:
        child = rel + "/" + e.name if rel else e.name
        try:
            if e.is_symlink():
                real = os.path.realpath(e.path)
                if not inside(real):
                    continue
                st = os.stat(real)
                if not stat.S_ISREG(st.st_mode):
                    continue
            elif e.is_dir(follow_symlinks=False):
                walk(child, e.path, found)
                continue
            elif e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
            else:
                continue
        except OSError:
            continue
        found.append([child, st.st_size, st.st_mtime_ns])

def send(path):
    try:
        real = os.path.realpath(os.path.join(root, path))
        if not inside(real):
            raise OSError
        f = open(real, "rb")
    except OSError:
        out.write(b"\1")
        return
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            out.write(b"\1")
            return
        out.write(struct.pack(">BQq", 0, st.st_size, st.st_mtime_ns))
        left, h = st.st_size, hashlib.sha256()
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            out.write(block)
            left -= len(block)
    short = left > 0
    while left > 0:
        pad = bytes(min(left, 1 << 20))
        h.update(pad)
        out.write(pad)
        left -= len(pad)
    try:
        now = os.stat(real)
        same = (now.st_ino, now.st_size, now.st_mtime_ns) == (
            st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        same = False
    out.write(h.digest() + (b"\1" if same and not short else b"\0"))

if mode == "list":
    found = []
    if os.path.isdir(root):
        walk("", root, found)
    found.sort()
    blob = json.dumps(found).encode()
    out.write(struct.pack(">Q", len(blob)) + blob)
else:
    raw = sys.stdin.buffer.read()
    for path in json.loads(raw[8:8 + struct.unpack(">Q", raw[:8])[0]]):
        send(path)
out.flush()
"""
