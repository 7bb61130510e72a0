"""Pushes to an instance, over the SSH connection of `ssh.py`: `SftpDest`, the `WritableTree`
uploads write (pulls read through `stream.py`). Named for the SFTP path it replaced: it now
runs the instance's python3 over exec channels, one round trip per step.
"""

from __future__ import annotations

import json
import shlex
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from launcher.errors import TargetError
from launcher.progress import CountingReader
from launcher.targets.vast.ssh import SshConn


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

    def put_many(
        self, items: list[tuple[Path, str]], advance: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        cmd = f"python3 -c {shlex.quote(_UNTAR)} {shlex.quote(self.root)}"

        def op() -> dict[str, str]:
            inp, out, err = self.conn.connect().exec_command(cmd, timeout=3600)
            with tarfile.open(fileobj=cast("BinaryIO", inp), mode="w|") as tar:
                for local, path in items:
                    info = tar.gettarinfo(str(local), arcname=path)
                    with local.open("rb") as f:
                        tar.addfile(info, CountingReader(f, advance) if advance else f)
            inp.channel.shutdown_write()
            written = out.read()
            code = out.channel.recv_exit_status()
            if code != 0:
                why = err.read().decode(errors="replace").strip()[-500:]
                raise TargetError(f"writing files under {self.root} failed ({code}): {why}")
            return cast("dict[str, str]", json.loads(written))

        return self.conn.retry("put", op)


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
# through a temp name, hashing what it writes; anything else, or a path leaving the root, is
# refused. Prints {path: sha256} of what it wrote.
_UNTAR = """
import hashlib, json, os, sys, tarfile
root, done = sys.argv[1], {}
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    for m in t:
        if m.name.startswith("/") or ".." in m.name.split("/") or not m.isreg():
            sys.exit("refusing " + m.name)
        dest = os.path.join(root, m.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        src, tmp, h = t.extractfile(m), dest + ".launch-tmp", hashlib.sha256()
        with open(tmp, "wb") as f:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                f.write(block)
        os.chmod(tmp, m.mode & 0o777)
        os.replace(tmp, dest)
        done[m.name] = h.hexdigest()
print(json.dumps(done))
"""
