"""The detector's data: real / fake videos (or images) in class folders, their face crops
cached on disk, and a synthetic set made offline.

Layout: any folder named like a class (real/fake, original/manipulated, ...) anywhere under the
data dir holds that class's files. A path through a folder named val/validation puts a file in
the validation split, test in the test split; with no val folder a fixed 20 % of the training
files (by file-name hash) is held out. Samples are face crops of evenly sampled frames; a
video's frames stay in one split, so no face is both trained on and scored.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import IMAGE_EXT, VIDEO_EXT, FaceCropper, read_frames, real_clip, write_video

REAL = {"real", "reals", "original", "originals", "authentic", "pristine", "genuine", "0_real"}
FAKE = {"fake", "fakes", "deepfake", "deepfakes", "manipulated", "synthetic", "generated",
        "ai", "aigenerated", "1_fake"}  # fmt: skip
VAL_DIRS = {"val", "valid", "validation"}
CLASS_NAMES = ("real", "fake")  # label 1 = fake


@dataclass(frozen=True)
class Item:
    path: Path
    label: int  # 1 = fake
    split: str  # train, val or test


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace(" ", "")


def scan(root: Path) -> list[Item]:
    """Every video or image under class folders below `root`, sorted by path."""
    found: list[Item] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXT | IMAGE_EXT or not path.is_file():
            continue
        parts = [_norm(p) for p in path.relative_to(root).parts[:-1]]
        label = next((int(p in FAKE) for p in reversed(parts) if p in REAL | FAKE), None)
        if label is None:
            continue
        split = "test" if "test" in parts else "val" if VAL_DIRS & set(parts) else "train"
        found.append(Item(path, label, split))
    if found and not any(i.split == "val" for i in found):
        found = [_hold_out(i) for i in found]
    return found


def _hold_out(item: Item) -> Item:
    if item.split != "train":
        return item
    # a hash of the file name, not a random draw: the same files are held out on every run
    h = int(hashlib.sha1(item.path.name.encode()).hexdigest()[:8], 16)
    return Item(item.path, item.label, "val" if h % 5 == 0 else "train")


@dataclass
class FaceStats:
    files: int = 0
    frames: int = 0
    faces_found: int = 0
    extracted: int = 0  # files run through the face detector this run
    cached: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        d = dict(vars(self))
        d["frames_per_s"] = round(self.frames / self.seconds, 1) if self.seconds > 0 else None
        d["seconds"] = round(self.seconds, 3)
        return d


class FaceSet:
    """Face crops per file, cached as .npz (uint8 crops + how many had a face)."""

    def __init__(self, cache: Path, frames: int, size: int, log: Callable[[str], None]) -> None:
        self.cache, self.frames, self.size, self.log = cache, frames, size, log
        self.cropper = FaceCropper(size)
        cache.mkdir(parents=True, exist_ok=True)

    def _key(self, path: Path) -> Path:
        st = path.stat()
        raw = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{self.frames}|{self.size}|haar1"
        return self.cache / f"{hashlib.sha1(raw.encode()).hexdigest()[:20]}.npz"

    def crops(self, path: Path, stats: FaceStats) -> np.ndarray | None:
        """(n, size, size, 3) uint8 face crops of `path`, None when it cannot be read."""
        stats.files += 1
        key = self._key(path)
        if key.is_file():
            try:
                with np.load(key) as z:
                    crops, found = z["crops"], int(z["found"])
                stats.cached += 1
                stats.frames += len(crops)
                stats.faces_found += found
                return crops
            except (OSError, ValueError, KeyError):
                key.unlink(missing_ok=True)  # a damaged cache file is redone
        t0 = time.monotonic()
        frames = read_frames(path, self.frames)
        if frames is None:
            stats.skipped.append(str(path))
            self.log(f"skipping corrupt or unreadable file {path}")
            return None
        pairs = [self.cropper.crop(f) for f in frames]
        crops = np.stack([c for c, _ in pairs])
        found = sum(ok for _, ok in pairs)
        stats.seconds += time.monotonic() - t0
        stats.extracted += 1
        stats.frames += len(crops)
        stats.faces_found += found
        tmp = key.with_name(f".{key.stem}.tmp.npz")
        np.savez(tmp, crops=crops, found=np.int64(found))
        tmp.replace(key)
        return crops


def load_split(
    items: list[Item], faces: FaceSet, stats: FaceStats, should_stop: Callable[[], bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(crops (N, S, S, 3) uint8, labels (N,), file index (N,)); None when stopped."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    owner: list[int] = []
    for i, item in enumerate(items):
        if should_stop():
            return None
        crops = faces.crops(item.path, stats)
        if crops is None:
            continue
        xs.append(crops)
        ys += [item.label] * len(crops)
        owner += [i] * len(crops)
    if not xs:
        empty = np.zeros((0, faces.size, faces.size, 3), np.uint8)
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(xs), np.asarray(ys, np.int64), np.asarray(owner, np.int64)


def write_synthetic(root: Path, per_class: int, seed: int, size: int, length: int) -> int:
    """`per_class` real and fake clips as mp4 files under root/{train,val,test}/{real,fake}.

    Real: the bundled photograph under camera-like motion (media.real_clip). Fake: the same kind
    of clip with frames of the tiny random text-to-video pipeline blended over the face region,
    a crude "face swap" made by a real diffusion pipeline. Existing files are kept, so reruns
    see the same files and the face cache stays valid. Returns the number of files written."""
    import cv2

    n_hold = max(1, per_class // 4)

    def split(i: int) -> str:
        return "val" if i < n_hold else "test" if i < 2 * n_hold else "train"

    paths = [(lab, i, root / split(i) / CLASS_NAMES[lab] / f"{CLASS_NAMES[lab]}_{i:04d}.mp4")
             for lab in (0, 1) for i in range(per_class)]  # fmt: skip
    missing = [(lab, i, p) for lab, i, p in paths if not p.exists()]
    if not missing:
        return 0
    fakes = [i for lab, i, _ in missing if lab == 1]
    generated = _generate(len(fakes), seed, length) if fakes else None
    for lab, i, path in missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        clip = real_clip(np.random.default_rng([seed, lab, i]), size, length)
        if lab == 1:
            assert generated is not None
            gen = generated[fakes.index(i)]
            lo, hi = size // 4, size - size // 4  # the face sits in the middle of the frame
            for t in range(length):
                patch = cv2.resize(gen[t % len(gen)], (hi - lo, hi - lo))
                region = clip[t, lo:hi, lo:hi].astype(np.float32)
                clip[t, lo:hi, lo:hi] = (0.5 * region + 0.5 * patch).astype(np.uint8)
        write_video(path, clip, 8.0)
    return len(missing)


def _generate(n: int, seed: int, frames: int) -> np.ndarray:
    """n clips (n, 4k + 1 frames, 32, 32, 3) uint8 from the tiny random Wan text-to-video
    pipeline, in one batched call (much cheaper than n calls on a CPU)."""
    import torch

    from . import tinypipe

    pipe = tinypipe.build("wan", seed)
    out = pipe(
        ["a face talking"] * n, num_frames=(frames - 1) // 4 * 4 + 1, height=32, width=32,
        num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    return (np.clip(np.asarray(out.frames), 0, 1) * 255).round().astype(np.uint8)
