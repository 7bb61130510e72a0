"""Pushes to an instance, over the SSH connection of `ssh.py`: `SftpDest`, the `WritableTree`
uploads write (pulls read through `stream.py`). Named for the SFTP path it replaced: it now
runs the instance's python3 over exec channels, one round trip per step.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from collections.abc import Callable
from pathlib import Path
from typing import cast

import paramiko

from launcher.errors import TargetError
from launcher.sync import CHUNK
from launcher.targets.vast.ssh import TRANSIENT, SshConn


class SftpDest:
    """`launcher.sync.WritableTree` over SSH, in one remote python3 call per step (the agent
    needs python3 there anyway): hash the files asked about; receive the files to write as one
    framed stream (like pulls, stream.py: a header with name, size and mode, then the bytes),
    each written to a temp name, hashed as it is written, then renamed. One round trip for any
    number of files: a bundle of a thousand small files must not cost a thousand round trips.
    (Named for the SFTP it replaced.)"""

    def __init__(self, conn: SshConn, root: str) -> None:
        self.conn = conn
        self.root = root.rstrip("/")

    def hashes(self, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        cmd = f"python3 -c {shlex.quote(_HASHES)} {shlex.quote(self.root)}"
        out = self.conn.check(cmd, timeout=600, stdin=json.dumps(paths).encode())
        return cast("dict[str, str]", json.loads(out))

    def put_many(
        self, items: list[tuple[Path, str]], advance: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        cmd = f"python3 -c {shlex.quote(_RECEIVE)} {shlex.quote(self.root)}"

        def op() -> dict[str, str]:
            chan = self.conn.exec_channel(cmd, timeout=600)
            try:
                try:
                    _send_files(chan, items, advance)
                    chan.shutdown_write()
                    answer = _read_all(chan.recv)
                except TRANSIENT:
                    why = SshConn.failure_of(chan)  # the receiver stopped (a full disk?)
                    if why is None:
                        raise  # the connection dropped: retried
                    raise TargetError(f"writing files under {self.root} failed: {why}") from None
                if chan.recv_exit_status() != 0:
                    why = SshConn.failure_of(chan) or f"exit {chan.recv_exit_status()}"
                    raise TargetError(f"writing files under {self.root} failed: {why}")
            finally:
                chan.close()
            return cast("dict[str, str]", json.loads(answer))

        return self.conn.retry("put", op)


_PUT_HEAD = struct.Struct(">HQH")  # name length (0 ends the stream), size, mode
_SEND_AT = 1 << 20  # small files are gathered into sends of about this much


def _send_files(
    chan: paramiko.Channel, items: list[tuple[Path, str]], advance: Callable[[int], None] | None
) -> None:
    """Each file framed: its header, then exactly the size its header says (a file that shrank
    while it was read is padded, and its hash then tells the push it changed)."""
    out = bytearray()
    for local, path in items:
        name = path.encode("utf-8", "surrogateescape")
        with local.open("rb") as f:
            st = os.fstat(f.fileno())
            out += _PUT_HEAD.pack(len(name), st.st_size, st.st_mode & 0o777) + name
            left = st.st_size
            while left > 0:
                block = f.read(min(left, CHUNK)) or bytes(min(left, CHUNK))
                out += block
                left -= len(block)
                if advance is not None:
                    advance(len(block))
                if len(out) >= _SEND_AT:
                    chan.sendall(bytes(out))
                    out.clear()
    out += _PUT_HEAD.pack(0, 0, 0)
    chan.sendall(bytes(out))


def _read_all(recv: Callable[[int], bytes]) -> bytes:
    parts: list[bytes] = []
    while chunk := recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


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
# Run by the instance's python3 (3.8 or later): write the framed files arriving on stdin under
# argv[1], each through a temp name, hashing what it writes; a path leaving the root is refused.
# Prints {path: sha256} of what it wrote.
_RECEIVE = r"""
import hashlib, json, os, struct, sys
root, done, made = sys.argv[1], {}, set()
inp, head = sys.stdin.buffer, struct.Struct(">HQH")

def exact(n):
    data = inp.read(n)
    if len(data) != n:
        sys.exit("the stream ended early")
    return data

while True:
    n, size, mode = head.unpack(exact(head.size))
    if n == 0:
        break
    name = exact(n).decode("utf-8", "surrogateescape")
    if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        sys.exit("refusing " + name)
    dest = os.path.join(root, name)
    folder = os.path.dirname(dest)
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)
    tmp, h, left = dest + ".launch-tmp", hashlib.sha256(), size
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:  # raw fds: a buffered file costs three more syscalls per file, and files are many
        while left > 0:
            block = exact(min(left, 1 << 20))
            h.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
            left -= len(block)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    done[name] = h.hexdigest()
print(json.dumps(done))
"""
