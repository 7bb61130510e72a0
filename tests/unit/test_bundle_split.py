"""The bundle as Kaggle receives it: big files in their own part, reproducibly, nothing lost."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from launcher.bundle import build_bundle, extract_bundle
from launcher.targets.kaggle.datasets import ASSET_MIN, split_bundle


def workload(root: Path, weights: bytes) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "train.py").write_text("print('train')\n")
    (root / "pkg" / "weights.bin").write_bytes(weights)
    (root / "labels.csv").write_text("a,1\n")
    return root


def members(archive: str) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isreg()
        }


def test_split_keeps_every_file_once_and_is_reproducible(tmp_path: Path) -> None:
    weights = os.urandom(ASSET_MIN + 5)
    b = build_bundle(workload(tmp_path / "w", weights), tmp_path / "cache", {"job.json": b"{}"})
    parts = split_bundle(b.path, b.digest, tmp_path / "home1")
    assert parts.assets is not None
    code, assets = members(parts.code[0]), members(parts.assets[0])
    assert (
        set(assets) == {"workload/pkg/weights.bin"}
        and assets["workload/pkg/weights.bin"] == weights
    )
    assert {"workload/pkg/train.py", "workload/labels.csv", "job.json", "manifest.json"} <= set(
        code
    )
    assert not set(code) & set(assets)
    # unpacked together they are the bundle, whose manifest still checks out
    whole = members(str(b.path))
    assert {**code, **assets} == whole
    out = tmp_path / "unpacked"
    with tarfile.open(parts.code[0]) as t1, tarfile.open(parts.assets[0]) as t2:
        t1.extractall(out, filter="data")
        t2.extractall(out, filter="data")
    extract_bundle(b.path, tmp_path / "reference")
    for rel in ("workload/pkg/weights.bin", "workload/pkg/train.py", "job.json"):
        assert (out / rel).read_bytes() == (tmp_path / "reference" / rel).read_bytes()
    # the same bundle on another machine: the same bytes, so Kaggle's copy is reused there too
    again = split_bundle(b.path, b.digest, tmp_path / "home2")
    assert again.code[1] == parts.code[1] and again.assets == (
        str(tmp_path / "home2" / Path(parts.assets[0]).relative_to(tmp_path / "home1")),
        parts.assets[1],
    )


def test_a_code_change_leaves_the_assets_part_as_it_was(tmp_path: Path) -> None:
    weights = os.urandom(ASSET_MIN * 2)
    root = workload(tmp_path / "w", weights)
    first = build_bundle(root, tmp_path / "cache", {"job.json": b"{}"})
    (root / "pkg" / "train.py").write_text("print('train, changed')\n")
    second = build_bundle(root, tmp_path / "cache", {"job.json": b"{}"})
    assert first.digest != second.digest
    a = split_bundle(first.path, first.digest, tmp_path / "home")
    b = split_bundle(second.path, second.digest, tmp_path / "home")
    assert a.assets is not None and b.assets is not None
    assert a.assets[1] == b.assets[1] and a.code[1] != b.code[1]
    assert os.path.getsize(b.code[0]) < 10_000


def test_a_bundle_without_big_files_travels_whole(tmp_path: Path) -> None:
    b = build_bundle(workload(tmp_path / "w", b"small"), tmp_path / "cache", {"job.json": b"{}"})
    parts = split_bundle(b.path, b.digest, tmp_path / "home")
    assert parts.assets is None and parts.code == (str(b.path), b.digest)


def test_a_run_prepared_before_the_split_still_pushes_its_whole_bundle() -> None:
    """A run stored by an older launcher (no `parts`, no kernel `assets`) resumes unchanged:
    the whole bundle, under the file name it was uploaded with."""
    import json

    from launcher.targets.kaggle.handle import KagglePrepared
    from launcher.targets.kaggle.sessions import bundle_parts

    stored = {
        "run_id": "hello-abc123",
        "bundle_path": "/home/u/.launch/bundles/abc.tar.gz",
        "bundle_digest": "ab" * 32,
        "agent": {"command": "python3 -m hello.train"},
        "job": "hello",
        "kernel": {"session_s": 3600.0, "safety_s": 60.0},
    }
    prepared = KagglePrepared.model_validate_json(json.dumps(stored))
    parts = bundle_parts(prepared)
    assert parts.code == ("/home/u/.launch/bundles/abc.tar.gz", "ab" * 32)
    assert parts.code_file == f"bundle-{'ab' * 8}.tar.gz" and parts.assets is None
    assert prepared.kernel.assets is None
