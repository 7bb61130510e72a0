"""Bundles: reproducible bytes, ignore rules, secrets, safe verified extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from launcher.bundle import (
    Bundle,
    BundleError,
    build_bundle,
    extract_bundle,
    iter_bundle_files,
    select_bundle_files,
)
from launcher.errors import LaunchError

EXTRAS = {"agent.py": b"print('agent')\n", "job.json": b'{"name": "demo"}\n'}


def write(root: Path, rel: str, data: str | bytes = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def selected(root: Path) -> list[str]:
    return [rel for rel, _ in iter_bundle_files(root)]


@pytest.fixture
def workload(tmp_path: Path) -> Path:
    root = tmp_path / "wl"
    write(root, "train.py", "print('train')\n")
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/model.py", "W = 1\n")
    run = write(root, "run.sh", "#!/bin/sh\necho hi\n")
    run.chmod(0o775)
    return root


def build(root: Path, cache: Path) -> Bundle:
    return build_bundle(root, cache, EXTRAS)


def test_same_tree_twice_gives_identical_bytes(workload: Path, tmp_path: Path) -> None:
    a = build(workload, tmp_path / "cache-a")
    b = build(workload, tmp_path / "cache-b")
    assert a.digest == b.digest
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path == tmp_path / "cache-a" / f"{a.digest}.tar.gz"
    assert a.size == a.path.stat().st_size


def test_archive_metadata_is_normalized(workload: Path, tmp_path: Path) -> None:
    bundle = build(workload, tmp_path / "cache")
    raw = bundle.path.read_bytes()
    assert raw[3] == 0  # gzip FLG: no file name
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME
    with tarfile.open(bundle.path, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "manifest.json"
    assert names[1:] == sorted(names[1:])
    assert "workload" in names and "workload/pkg" in names
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.isdir() or m.isreg()
    modes = {m.name: m.mode for m in members}
    assert modes["workload/run.sh"] == 0o755
    assert modes["workload/train.py"] == 0o644
    assert modes["workload/pkg"] == 0o755


def test_manifest_lists_every_file(workload: Path, tmp_path: Path) -> None:
    bundle = build(workload, tmp_path / "cache")
    expected = {
        "agent.py",
        "job.json",
        "workload/train.py",
        "workload/run.sh",
        "workload/pkg/__init__.py",
        "workload/pkg/model.py",
    }
    assert set(bundle.manifest) == expected
    assert list(bundle.manifest) == sorted(expected)
    with tarfile.open(bundle.path, "r:gz") as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        doc = json.loads(f.read())
    assert doc["files"]["workload/pkg/model.py"]["size"] == len("W = 1\n")
    assert doc["files"] == {k: v.model_dump() for k, v in bundle.manifest.items()}


def test_mtime_only_change_keeps_digest(workload: Path, tmp_path: Path) -> None:
    before = build(workload, tmp_path / "cache")
    os.utime(workload / "train.py", (1_000_000, 1_000_000))
    after = build(workload, tmp_path / "cache")
    assert after.digest == before.digest


def test_content_change_changes_digest(workload: Path, tmp_path: Path) -> None:
    before = build(workload, tmp_path / "cache")
    write(workload, "train.py", "print('train v2')\n")
    after = build(workload, tmp_path / "cache")
    assert after.digest != before.digest
    assert before.path.exists() and after.path.exists()


def test_extra_files_change_digest(workload: Path, tmp_path: Path) -> None:
    a = build_bundle(workload, tmp_path / "cache", {"job.json": b"1"})
    b = build_bundle(workload, tmp_path / "cache", {"job.json": b"2"})
    assert a.digest != b.digest


def test_existing_bundle_is_reused(workload: Path, tmp_path: Path) -> None:
    first = build(workload, tmp_path / "cache")
    inode = first.path.stat().st_ino
    again = build(workload, tmp_path / "cache")
    assert again.path.stat().st_ino == inode
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{first.digest}.tar.gz"]


def test_always_excluded(workload: Path) -> None:
    for rel in (".git/config", "pkg/__pycache__/m.cpython-311.pyc", "stray.pyc", ".venv/bin/py"):
        write(workload, rel)
    for rel in ("venv/lib/x.py", "nb/.ipynb_checkpoints/a.ipynb", ".DS_Store", "pkg/.DS_Store"):
        write(workload, rel)
    assert selected(workload) == ["pkg/__init__.py", "pkg/model.py", "run.sh", "train.py"]


def test_gitignore_nested_negation_and_dir_only(workload: Path) -> None:
    write(workload, ".gitignore", "*.log\n!keep.log\nbuild/\n/top.txt\n")
    write(workload, "a.log")
    write(workload, "keep.log")
    write(workload, "sub/b.log")
    write(workload, "build/out.bin")
    write(workload, "sub/build/out.bin")
    write(workload, "sub/build2")  # a file, so the dir-only pattern does not touch it
    write(workload, "top.txt")
    write(workload, "sub/top.txt")  # anchored pattern: only the root one
    write(workload, "sub/.gitignore", "!b.log\n*.ckpt\n/local.txt\n")
    write(workload, "sub/m.ckpt")
    write(workload, "sub/local.txt")  # anchored to sub/, where its .gitignore lives
    write(workload, "sub/deeper/local.txt")
    write(workload, "m.ckpt")  # the nested rule does not reach up
    write(workload, "other/.gitignore", "*\n!.gitignore\n")
    write(workload, "other/data.csv")
    got = set(selected(workload))
    assert {"keep.log", "sub/b.log", "sub/build2", "sub/top.txt", "m.ckpt"} <= got
    assert not {"a.log", "build/out.bin", "sub/build/out.bin", "top.txt", "sub/m.ckpt"} & got
    assert "sub/local.txt" not in got and "sub/deeper/local.txt" in got
    assert "other/data.csv" not in got
    assert ".gitignore" in got and "sub/.gitignore" in got


def test_excluded_dir_cannot_be_reincluded_by_gitignore(workload: Path) -> None:
    # git semantics: a file inside an excluded directory cannot be re-included.
    write(workload, ".gitignore", "logs/\n!logs/important.log\ndata/*\n!data/keep.txt\n")
    write(workload, "logs/important.log")
    write(workload, "data/big.bin")
    write(workload, "data/keep.txt")
    got = set(selected(workload))
    assert "logs/important.log" not in got
    assert "data/keep.txt" in got and "data/big.bin" not in got


def test_launchignore_applies_last(workload: Path) -> None:
    write(workload, ".gitignore", "generated.py\n")
    write(workload, ".launchignore", "weights/\n*.csv\n!generated.py\n")
    write(workload, "generated.py")
    write(workload, "weights/model.bin")
    write(workload, "sub/table.csv")
    write(workload, "sub/.gitignore", "!table.csv\n")
    got = set(selected(workload))
    assert "generated.py" in got  # .launchignore negation beats .gitignore
    assert "weights/model.bin" not in got
    assert "sub/table.csv" not in got  # .launchignore beats a nested .gitignore too


def test_secrets_excluded_and_reported_even_with_negation(workload: Path, tmp_path: Path) -> None:
    secrets = [".env", ".env.local", "kaggle.json", "conf/vast_api_key", ".netrc", "tls/s.pem"]
    secrets += ["tls/s.key", "id_rsa", "id_ed25519.pub", "credentials.json", "token.json"]
    secrets += ["client_secrets.json", "cert.p12", "Kaggle.JSON"]
    for rel in secrets:
        write(workload, rel, "SECRET")
    write(workload, ".launchignore", "".join(f"!{s}\n" for s in secrets))
    bundle = build(workload, tmp_path / "cache")
    assert sorted(bundle.skipped_secrets) == sorted(secrets)
    assert not any(s in name for name in bundle.manifest for s in secrets)
    assert b"SECRET" not in gzip.decompress(bundle.path.read_bytes())


def test_gitignored_secret_is_excluded_silently(workload: Path) -> None:
    write(workload, ".gitignore", ".env\n")
    write(workload, ".env", "SECRET")
    selection = select_bundle_files(workload)
    assert ".env" not in [rel for rel, _ in selection.files]
    assert selection.skipped_secrets == []


def test_symlinks(workload: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "outside.txt", "OUTSIDE")
    write(workload, "real/secret.pem", "SECRET")
    (workload / "inside_link.py").symlink_to(workload / "pkg" / "model.py")
    (workload / "outside_link.txt").symlink_to(outside)
    (workload / "dir_link").symlink_to(workload / "pkg")
    (workload / "dangling").symlink_to(workload / "nope")
    (workload / "innocent.txt").symlink_to(workload / "real" / "secret.pem")
    bundle = build(workload, tmp_path / "cache")
    assert bundle.manifest["workload/inside_link.py"] == bundle.manifest["workload/pkg/model.py"]
    assert "workload/outside_link.txt" not in bundle.manifest
    assert not any(name.startswith("workload/dir_link") for name in bundle.manifest)
    assert "workload/dangling" not in bundle.manifest
    assert "workload/innocent.txt" not in bundle.manifest
    assert "innocent.txt" in bundle.skipped_secrets
    warned = "\n".join(bundle.warnings)
    assert "outside_link.txt" in warned and "dir_link" in warned and "dangling" in warned
    with tarfile.open(bundle.path, "r:gz") as tar:
        assert all(m.isreg() or m.isdir() for m in tar.getmembers())
    assert b"OUTSIDE" not in gzip.decompress(bundle.path.read_bytes())


def test_missing_or_file_workload_dir(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        build(tmp_path / "nope", tmp_path / "cache")
    write(tmp_path, "afile")
    with pytest.raises(BundleError, match="not a directory") as info:
        build(tmp_path / "afile", tmp_path / "cache")
    assert isinstance(info.value, LaunchError)


@pytest.mark.parametrize("name", ["sub/agent.py", "workload", "manifest.json", "..", ""])
def test_extra_file_names_must_be_top_level(workload: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleError):
        build_bundle(workload, tmp_path / "cache", {name: b"x"})


def test_large_bundle_warns(
    workload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("launcher.bundle.LARGE_BUNDLE_BYTES", 100)
    write(workload, "weights.bin", os.urandom(4096))
    bundle = build(workload, tmp_path / "cache")
    assert any(".launchignore" in w and "workload/weights.bin" in w for w in bundle.warnings)


def test_extract_round_trip(workload: Path, tmp_path: Path) -> None:
    bundle = build(workload, tmp_path / "cache")
    dest = tmp_path / "out"
    extract_bundle(bundle.path, dest)
    for rel, path in iter_bundle_files(workload):
        assert (dest / "workload" / rel).read_bytes() == path.read_bytes()
    assert (dest / "agent.py").read_bytes() == EXTRAS["agent.py"]
    assert (dest / "manifest.json").is_file()
    assert os.access(dest / "workload" / "run.sh", os.X_OK)
    assert not os.access(dest / "workload" / "train.py", os.X_OK)
    assert not list(dest.rglob("*.launch-tmp"))


def _craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _manifest(files: dict[str, bytes]) -> tuple[tarfile.TarInfo, bytes]:
    entries = {
        n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
    }
    doc = {"files": entries}
    return _file("manifest.json", json.dumps(doc).encode())


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "bad",
    [
        _file("../escape.txt", b"x"),
        _file("/abs/escape.txt", b"x"),
        _file("workload/../../escape.txt", b"x"),
        _link("workload/link", "/etc/passwd", tarfile.SYMTYPE),
        _link("workload/hard", "/etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "hardlink"],
)
def test_extract_refuses_unsafe_members(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes | None]
) -> None:
    archive = _craft(
        tmp_path / "evil.tar.gz", [_manifest({"a.txt": b"a"}), _file("a.txt", b"a"), bad]
    )
    dest = tmp_path / "sandbox" / "out"
    with pytest.raises(BundleError, match="refusing"):
        extract_bundle(archive, dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "sandbox" / "escape.txt").exists()
    assert not dest.exists() or not any(dest.iterdir())  # checked before anything is written


def test_extract_refuses_devices(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("workload/null")
    dev.type = tarfile.CHRTYPE
    archive = _craft(tmp_path / "dev.tar.gz", [_manifest({}), (dev, None)])
    with pytest.raises(BundleError, match="devices"):
        extract_bundle(archive, tmp_path / "out")


def test_extract_verifies_against_manifest(tmp_path: Path) -> None:
    archive = _craft(
        tmp_path / "bad.tar.gz", [_manifest({"a.txt": b"good"}), _file("a.txt", b"evil")]
    )
    with pytest.raises(BundleError, match="does not match"):
        extract_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "a.txt").exists()
    assert not list((tmp_path / "out").rglob("*.launch-tmp"))


def test_extract_refuses_unlisted_files_and_missing_manifest(tmp_path: Path) -> None:
    unlisted = _craft(tmp_path / "u.tar.gz", [_manifest({}), _file("extra.txt", b"x")])
    with pytest.raises(BundleError, match="disagree"):
        extract_bundle(unlisted, tmp_path / "out")
    bare = _craft(tmp_path / "b.tar.gz", [_file("a.txt", b"x")])
    with pytest.raises(BundleError, match="no manifest"):
        extract_bundle(bare, tmp_path / "out2")


def test_extract_refuses_damaged_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(BundleError, match="cannot extract"):
        extract_bundle(junk, tmp_path / "out")
