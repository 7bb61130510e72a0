"""pull_tree: verified, atomic, incremental; real files, with small lying/mutating trees."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from launcher.errors import LaunchError
from launcher.sync import (
    RECORD_NAME,
    LocalTree,
    PullError,
    PullVerifyError,
    PushVerifyError,
    RemoteFile,
    RemoteTree,
    atomic_write_bytes,
    atomic_write_text,
    is_in_progress,
    pull_tree,
    push_tree,
    sha256_file,
    tree_files,
)


def write(root: Path, rel: str, data: str | bytes = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def bump(path: Path, data: str) -> None:
    """Rewrite with a distinct mtime, so size+mtime really changes even on coarse clocks."""
    st = path.stat()
    path.write_text(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def leftovers(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.name.endswith(".launch-tmp")]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "remote"
    write(root, "metrics.jsonl", '{"epoch": 1}\n')
    write(root, "ckpt/epoch-1/model.bin", os.urandom(3 * 1024 * 1024 + 7))
    write(root, "logs/stdout.log", "hello\n")
    return root


def test_local_tree_satisfies_protocol(src: Path) -> None:
    tree: RemoteTree = LocalTree(src)
    assert [f.path for f in tree.list_files()] == [
        "ckpt/epoch-1/model.bin",
        "logs/stdout.log",
        "metrics.jsonl",
    ]
    assert tree.stat("nope") is None
    assert LocalTree(src / "not-yet").list_files() == []


def test_first_pull_copies_all_then_nothing(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    first = pull_tree(LocalTree(src), dest)
    assert sorted(first.copied) == ["ckpt/epoch-1/model.bin", "logs/stdout.log", "metrics.jsonl"]
    assert first.bytes_copied == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    for rel in first.copied:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    record = json.loads((dest / RECORD_NAME).read_text())
    assert record["files"]["metrics.jsonl"]["sha256"] == sha256_file(src / "metrics.jsonl")

    second = pull_tree(LocalTree(src), dest)
    assert second.copied == [] and second.bytes_copied == 0
    assert second.skipped_unchanged == 3


def test_only_changed_file_is_copied(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    bump(src / "metrics.jsonl", '{"epoch": 1}\n{"epoch": 2}\n')
    result = pull_tree(LocalTree(src), dest)
    assert result.copied == ["metrics.jsonl"]
    assert result.skipped_unchanged == 2
    assert (dest / "metrics.jsonl").read_text().count("epoch") == 2


def test_locally_deleted_or_truncated_copy_is_pulled_again(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    (dest / "logs" / "stdout.log").unlink()
    (dest / "metrics.jsonl").write_text("")
    result = pull_tree(LocalTree(src), dest)
    assert sorted(result.copied) == ["logs/stdout.log", "metrics.jsonl"]


def test_in_progress_and_hidden_files_skipped(src: Path, tmp_path: Path) -> None:
    for rel in ("ckpt/model.tmp", "a.partial", "b.part", "notes~", ".hidden", "ckpt/.x.swp"):
        write(src, rel)
    write(src, ".cache/inner.bin")
    write(src, "ckpt/epoch-2.tmp/model.bin")  # a checkpoint dir written as tmp + rename
    result = pull_tree(LocalTree(src), tmp_path / "home")
    assert sorted(result.copied) == ["ckpt/epoch-1/model.bin", "logs/stdout.log", "metrics.jsonl"]
    assert is_in_progress("x/.y/z") and not is_in_progress("x/y.bin")


def test_include_filter(src: Path, tmp_path: Path) -> None:
    result = pull_tree(LocalTree(src), tmp_path / "home", include=lambda p: p.startswith("ckpt/"))
    assert result.copied == ["ckpt/epoch-1/model.bin"]


def test_nested_dirs_created_and_mtime_preserved(src: Path, tmp_path: Path) -> None:
    os.utime(src / "ckpt/epoch-1/model.bin", ns=(1_600_000_000_123_456_789,) * 2)
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    local = dest / "ckpt" / "epoch-1" / "model.bin"
    assert local.is_file()
    assert local.stat().st_mtime_ns == (src / "ckpt/epoch-1/model.bin").stat().st_mtime_ns


def test_files_deleted_at_source_are_kept(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    (src / "logs" / "stdout.log").unlink()
    result = pull_tree(LocalTree(src), dest)
    assert result.copied == []
    assert (dest / "logs" / "stdout.log").read_text() == "hello\n"


class GrowingTree(LocalTree):
    """A writer appends to `victim` while we read it."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(root)
        self.victim = victim

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        if path == self.victim:
            target = self.root / path
            st = target.stat()
            with target.open("ab") as f:
                f.write(b"more data\n")
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return super().open(path)


def test_file_changing_during_copy_is_not_installed(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    bump(src / "metrics.jsonl", '{"epoch": 2}\n')  # a new version the next pull should want
    result = pull_tree(GrowingTree(src, "metrics.jsonl"), dest)
    assert result.changed_during_copy == ["metrics.jsonl"]
    assert "metrics.jsonl" not in result.copied
    assert (dest / "metrics.jsonl").read_text() == '{"epoch": 1}\n'  # old copy left alone
    assert leftovers(dest) == []
    # The writer has finished: the next pull installs the settled file.
    again = pull_tree(LocalTree(src), dest)
    assert again.copied == ["metrics.jsonl"]
    assert (dest / "metrics.jsonl").read_bytes() == (src / "metrics.jsonl").read_bytes()


class VanishingTree(LocalTree):
    """The file is renamed away between listing and open."""

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        (self.root / path).unlink()
        return super().open(path)


def test_file_vanishing_before_open_is_reported(src: Path, tmp_path: Path) -> None:
    result = pull_tree(VanishingTree(src), tmp_path / "home")
    assert len(result.changed_during_copy) == 3 and result.copied == []
    assert not (tmp_path / "home" / RECORD_NAME).exists()


class LyingHashTree(LocalTree):
    def sha256(self, path: str) -> str | None:
        return "0" * 64


class HonestHashTree(LocalTree):
    def sha256(self, path: str) -> str | None:
        return hashlib.sha256((self.root / path).read_bytes()).hexdigest().upper()


def test_hash_mismatch_raises_and_leaves_no_partial_file(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    with pytest.raises(PullVerifyError, match="ckpt/epoch-1/model.bin") as info:
        pull_tree(LyingHashTree(src), dest)
    assert isinstance(info.value, LaunchError)
    assert not (dest / "ckpt" / "epoch-1" / "model.bin").exists()
    assert leftovers(dest) == []


def test_hash_mismatch_keeps_previous_copy(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    bump(src / "logs/stdout.log", "changed\n")
    with pytest.raises(PullVerifyError):
        pull_tree(LyingHashTree(src), dest)
    assert (dest / "logs" / "stdout.log").read_text() == "hello\n"
    assert leftovers(dest) == []


def test_matching_remote_hash_is_accepted(src: Path, tmp_path: Path) -> None:
    result = pull_tree(HonestHashTree(src), tmp_path / "home")
    assert len(result.copied) == 3


class ShortReadTree(LocalTree):
    """A transfer that drops the connection early without an error."""

    @contextmanager
    def _short(self, path: str) -> Iterator[BinaryIO]:
        yield io.BytesIO((self.root / path).read_bytes()[:-1])

    def open(self, path: str) -> AbstractContextManager[BinaryIO]:
        return self._short(path)


def test_short_read_raises(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    with pytest.raises(PullVerifyError, match="bytes"):
        pull_tree(ShortReadTree(src), dest)
    assert leftovers(dest) == []
    assert not [p for p in dest.rglob("*") if p.is_file() and p.name != RECORD_NAME]


def test_files_pulled_before_a_failure_are_recorded(src: Path, tmp_path: Path) -> None:
    class FailsOnMetrics(LocalTree):
        def sha256(self, path: str) -> str | None:
            return "0" * 64 if path == "metrics.jsonl" else None

    dest = tmp_path / "home"
    with pytest.raises(PullVerifyError):
        pull_tree(FailsOnMetrics(src), dest)
    result = pull_tree(LocalTree(src), dest)
    assert result.copied == ["metrics.jsonl"]
    assert result.skipped_unchanged == 2


def test_unsafe_remote_path_refused(tmp_path: Path) -> None:
    class EvilTree(LocalTree):
        def list_files(self) -> list[RemoteFile]:
            return [RemoteFile(path="../escape", size=1, mtime_ns=0)]

    with pytest.raises(PullError, match="escape"):
        pull_tree(EvilTree(tmp_path), tmp_path / "home")


def test_damaged_record_means_full_pull(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "home"
    pull_tree(LocalTree(src), dest)
    (dest / RECORD_NAME).write_text("{not json")
    assert len(pull_tree(LocalTree(src), dest).copied) == 3


def test_atomic_write_helpers(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic_write_text(target, '{"phase": "running"}')
    atomic_write_bytes(target, b'{"phase": "done"}')
    assert target.read_bytes() == b'{"phase": "done"}'
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0o600
    data = os.urandom(2 * 1024 * 1024 + 3)
    write(tmp_path, "blob", data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


# ---- push_tree: by manifest diff --------------------------------------------------------------


def test_push_sends_only_what_differs_and_verifies(tmp_path: Path) -> None:
    local = tmp_path / "local"
    for i in range(20):
        write(local, f"pkg/mod{i:02d}.py", os.urandom(10_000))
    (local / "pkg" / "mod00.py").chmod(0o755)
    write(local, ".hidden", "never pushed")
    write(local, "half.tmp", "a writer's temp")
    dest = LocalTree(tmp_path / "far")  # does not exist yet
    first = push_tree(tree_files(local), dest)
    assert len(first.sent) == 20 and first.bytes_sent == first.bytes_total == 200_000
    for i in range(20):
        rel = f"pkg/mod{i:02d}.py"
        assert sha256_file(tmp_path / "far" / rel) == sha256_file(local / rel)
    assert (tmp_path / "far" / "pkg" / "mod00.py").stat().st_mode & 0o777 == 0o755
    assert (
        not (tmp_path / "far" / ".hidden").exists()
        and not (tmp_path / "far" / "half.tmp").exists()
    )
    write(local, "pkg/mod07.py", os.urandom(10_000))
    (tmp_path / "far" / "pkg" / "mod11.py").write_bytes(b"damaged on the far side")
    again = push_tree(tree_files(local), dest)
    assert sorted(again.sent) == ["pkg/mod07.py", "pkg/mod11.py"]
    assert again.bytes_sent == 20_000 and again.skipped_unchanged == 18
    assert push_tree(tree_files(local), dest).sent == []
    assert not leftovers(tmp_path / "far")


class _Corrupting(LocalTree):
    """Damages what it writes, and says the hash of what it holds (as a far side would)."""

    def put_many(
        self, items: list[tuple[Path, str]], advance: Callable[[int], None] | None = None
    ) -> dict[str, str]:
        super().put_many(items, advance)
        for _local, path in items:
            target = self.root / path
            target.write_bytes(target.read_bytes()[:-1] + b"!")
        return self.hashes([path for _local, path in items])


def test_push_whose_copy_arrives_damaged_raises(tmp_path: Path) -> None:
    local = tmp_path / "local"
    write(local, "a.bin", b"payload")
    with pytest.raises(PushVerifyError, match="a.bin"):
        push_tree(tree_files(local), _Corrupting(tmp_path / "far"))


def test_first_files_lead_and_arrive_even_when_the_pull_breaks_after_them(tmp_path: Path) -> None:
    """What `first` is for: a metrics snapshot installed before the checkpoint that needs it,
    though 'checkpoints/' sorts before 'logs/'."""
    src = tmp_path / "remote"
    write(src, "checkpoints/ckpt-3.bin", os.urandom(1000))
    write(src, "logs/checkpoint-metrics/ckpt-3.jsonl", '{"epoch": 3}\n')
    opened: list[str] = []

    class BreaksOnCheckpoints(LocalTree):
        def open(self, path: str) -> AbstractContextManager[BinaryIO]:
            opened.append(path)
            if path.startswith("checkpoints/"):
                raise ConnectionResetError("dropped")
            return super().open(path)

    dest = tmp_path / "home"
    with pytest.raises(ConnectionResetError):
        pull_tree(
            BreaksOnCheckpoints(src),
            dest,
            first=lambda p: p.startswith("logs/checkpoint-metrics/"),
        )
    assert opened == ["logs/checkpoint-metrics/ckpt-3.jsonl", "checkpoints/ckpt-3.bin"]
    assert (dest / "logs" / "checkpoint-metrics" / "ckpt-3.jsonl").is_file()
    assert not (dest / "checkpoints").exists() or not any((dest / "checkpoints").iterdir())
    again = pull_tree(LocalTree(src), dest)
    assert again.copied == ["checkpoints/ckpt-3.bin"] and again.skipped_unchanged == 1


def test_batches_are_installed_and_recorded_as_they_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import launcher.sync as sync_mod

    monkeypatch.setattr(sync_mod, "_BATCH_FILES", 2)
    src = tmp_path / "remote"
    for i in range(6):
        write(src, f"out/f{i}.txt", f"file {i}\n")

    class DiesAtTheFifth(LocalTree):
        def open(self, path: str) -> AbstractContextManager[BinaryIO]:
            if path == "out/f4.txt":
                # the record already names the first batch when a pull dies mid-way
                on_disk = json.loads((dest / RECORD_NAME).read_text())["files"]
                assert sorted(on_disk) == ["out/f0.txt", "out/f1.txt", "out/f2.txt", "out/f3.txt"]
                raise KeyboardInterrupt
            return super().open(path)

    dest = tmp_path / "home"
    with pytest.raises(KeyboardInterrupt):
        pull_tree(DiesAtTheFifth(src), dest)
    assert leftovers(dest) == []
    again = pull_tree(LocalTree(src), dest)
    assert again.copied == ["out/f4.txt", "out/f5.txt"] and again.skipped_unchanged == 4


def test_a_name_that_is_not_utf8_is_pulled_once(tmp_path: Path) -> None:
    src = tmp_path / "remote"
    src.mkdir()
    odd = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: a lone surrogate in Python
    (src / odd).write_text("latin-1 name")
    write(src, "plain.txt", "plain")
    dest = tmp_path / "home"
    assert sorted(pull_tree(LocalTree(src), dest).copied) == sorted([odd, "plain.txt"])
    assert (dest / odd).read_text() == "latin-1 name"
    again = pull_tree(LocalTree(src), dest)
    assert again.copied == [] and again.skipped_unchanged == 2
