"""Pulls from a Vast instance as one stream (`ShellTree`), against the emulator's real container
and real sshd: the guarantees of `pull_tree` hold for the stream path too."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.errors import TargetError
from launcher.sim.vast import VastSim
from launcher.sync import RECORD_NAME, RemoteFile, pull_tree, sha256_file
from launcher.targets.vast.ssh import TRANSIENT, SshConn
from launcher.targets.vast.stream import ShellTree
from launcher.targets.vast.target import VastTarget
from tests.sim import vast_fixtures
from tests.targets.vast.test_vast_target import instance, target

vast_sim = vast_fixtures.vast_sim
__all__ = ["target"]  # the fixture, imported for pytest

ROOT = "/workspace/run"


class Trigger:
    """A meter that does something once, when `after` bytes have arrived."""

    def __init__(self, after: int, action: Callable[[], None]) -> None:
        self.after, self.action, self.seen, self.fired = after, action, 0, False

    def start(self, total_bytes: int, files: int) -> None:
        self.total = total_bytes

    def advance(self, nbytes: int) -> None:
        self.seen += nbytes
        if not self.fired and self.seen >= self.after:
            self.fired = True
            self.action()

    def finish(self) -> None:
        return None


def leftovers(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if ".launch-tmp" in p.name]


def remote_sums(conn: SshConn) -> dict[str, str]:
    out = conn.check(f"cd {ROOT} && find . -type f -print0 | xargs -0 sha256sum")
    return {line[66:].removeprefix("./"): line[:64] for line in out.splitlines()}


def local_sums(dest: Path) -> dict[str, str]:
    return {
        p.relative_to(dest).as_posix(): sha256_file(p)
        for p in dest.rglob("*")
        if p.is_file() and p.name != RECORD_NAME
    }


def test_stream_pull_of_odd_names_links_empty_files_and_removals(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    with instance(target, vast_sim, base_image, tmp_path, launch_home) as (conn, _iid):
        conn.check(
            f"mkdir -p '{ROOT}/with space/ünïcødé' {ROOT}/empty-dir {ROOT}/logs && cd {ROOT} && "
            "printf 'a b' > 'with space/file name.txt' && "
            "printf 'grüße' > 'with space/ünïcødé/naïve 名前.txt' && "
            ": > logs/empty.log && head -c 3000001 /dev/urandom > big.bin && "
            'for i in $(seq 1 300); do printf "line $i" > logs/f$i.txt; done && '
            "printf secret > /root/outside.txt && printf old > old.txt && touch -d @-100 old.txt && "
            "ln -s big.bin best.bin && ln -s /root/outside.txt escape.txt && "
            "ln -s ../../etc/passwd up.txt && ln -s logs logs-link && ln -s nowhere dangling"
        )
        dest = tmp_path / "home"
        first = pull_tree(ShellTree(conn, ROOT), dest)
        theirs = remote_sums(conn)  # find -type f: regular files, links not followed
        theirs["best.bin"] = theirs["big.bin"]  # a link to a file inside the folder: its content
        assert local_sums(dest) == theirs
        assert sorted(first.copied) == sorted(theirs) and not first.changed_during_copy
        assert (dest / "logs" / "empty.log").stat().st_size == 0
        assert (dest / "with space" / "ünïcødé" / "naïve 名前.txt").read_text() == "grüße"
        for name in ("escape.txt", "up.txt", "logs-link", "dangling"):
            assert not (dest / name).exists(), name  # nothing from outside, no loops
        assert not (dest / "empty-dir").exists()  # folders come home with their files
        assert (dest / "old.txt").stat().st_mtime_ns == -100 * 10**9  # dated before 1970
        # a file gone between the listing and its turn in the stream: reported, not an error
        gone = RemoteFile(path="logs/never-there.txt", size=3, mtime_ns=0)
        tree = ShellTree(conn, ROOT)
        arrived = list(tree.fetch([gone, *[f for f in tree.list_files() if f.path == "old.txt"]]))
        assert [a.file is None for a in arrived] == [True, False]
        assert not leftovers(dest)

        # nothing changed: nothing moves; one changed: only it moves
        assert pull_tree(ShellTree(conn, ROOT), dest).copied == []
        conn.check(f"printf 'line 7, again' > {ROOT}/logs/f7.txt")
        again = pull_tree(ShellTree(conn, ROOT), dest)
        assert again.copied == ["logs/f7.txt"]
        assert (dest / "logs" / "f7.txt").read_text() == "line 7, again"

        # removed on the instance: kept here
        conn.check(f"rm -r '{ROOT}/with space' {ROOT}/logs/f8.txt")
        assert pull_tree(ShellTree(conn, ROOT), dest).copied == []
        assert (dest / "with space" / "file name.txt").read_text() == "a b"
        assert (dest / "logs" / "f8.txt").read_text() == "line 8"


def test_stream_file_rewritten_mid_stream_keeps_the_previous_copy(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    with instance(target, vast_sim, base_image, tmp_path, launch_home) as (conn, _iid):
        # 40 MB: the sender is still reading it when its first bytes arrive here (the SSH
        # window and its buffer hold a few MB)
        conn.check(
            f"mkdir -p {ROOT} && head -c 40000000 /dev/urandom > {ROOT}/a-big.bin && "
            f"printf one > {ROOT}/b.txt"
        )
        dest = tmp_path / "home"
        pull_tree(ShellTree(conn, ROOT), dest)
        old = sha256_file(dest / "a-big.bin")
        conn.check(
            f"head -c 40000000 /dev/urandom > {ROOT}/a-big.bin && printf two > {ROOT}/b.txt"
        )

        def append() -> None:  # another channel of the same connection: a writer on the instance
            conn.check(f"printf more >> {ROOT}/a-big.bin")

        result = pull_tree(ShellTree(conn, ROOT), dest, meter=Trigger(1, append))
        assert result.changed_during_copy == ["a-big.bin"]
        assert result.copied == ["b.txt"]
        assert sha256_file(dest / "a-big.bin") == old  # the previous copy, untouched
        assert not leftovers(dest)
        settled = pull_tree(ShellTree(conn, ROOT), dest)
        assert settled.copied == ["a-big.bin"]
        assert local_sums(dest) == remote_sums(conn)


def test_stream_cut_by_a_dropped_connection_resumes(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    with instance(target, vast_sim, base_image, tmp_path, launch_home) as (conn, iid):
        # 100 small files, then a big one the connection drops in the middle of
        conn.check(
            f"mkdir -p {ROOT}/a {ROOT}/z && cd {ROOT} && "
            "for i in $(seq 100 199); do head -c 5000 /dev/urandom > a/f$i.bin; done && "
            "head -c 60000000 /dev/urandom > m-big.bin && printf tail > z/last.txt"
        )
        dest = tmp_path / "home"

        def drop() -> None:
            vast_sim.drop_ssh(iid)  # every sshd on the instance killed: a real drop

        with pytest.raises(TRANSIENT):
            pull_tree(ShellTree(conn, ROOT), dest, meter=Trigger(100 * 5000 + 10_000_000, drop))
        assert not leftovers(dest)
        assert not (dest / "m-big.bin").exists()  # nothing half-written
        installed = local_sums(dest)
        assert len(installed) == 100 and all(k.startswith("a/") for k in installed)
        conn.close()
        vast_sim.restore_ssh(iid)
        for _ in range(60):
            try:
                conn.connect()
                break
            except Exception:  # noqa: BLE001 - sshd restarting
                import time

                time.sleep(0.5)
        again = pull_tree(ShellTree(conn, ROOT), dest)
        assert sorted(again.copied) == ["m-big.bin", "z/last.txt"]  # the rest, not the 100 again
        assert again.skipped_unchanged == 100
        assert local_sums(dest) == remote_sums(conn)
        digest = hashlib.sha256((dest / "m-big.bin").read_bytes()).hexdigest()
        assert digest == remote_sums(conn)["m-big.bin"]
        assert os.path.getsize(dest / "m-big.bin") == 60_000_000


def test_a_sender_that_fails_says_why_and_is_not_taken_for_a_dropped_connection(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    class Broken(ShellTree):
        def _cmd(self, mode: str) -> str:  # what a far side without a working python3 does
            return "echo 'python3: cannot open shared object file' >&2; exit 127"

    with instance(target, vast_sim, base_image, tmp_path, launch_home) as (conn, _iid):
        with pytest.raises(TargetError, match="cannot open shared object file") as info:
            pull_tree(Broken(conn, ROOT), tmp_path / "home")
        assert not isinstance(info.value, TRANSIENT)
