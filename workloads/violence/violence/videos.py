"""Video datasets: the RWF-2000 folder layout, even frame sampling, and synthetic clips.

Layout: any folder named like a class (Fight/NonFight, Violence/NonViolence, violent/nonviolent)
anywhere under the data dir holds that class's videos. A path through a folder named val,
validation or test puts a video in the validation split; when there is none, a stratified,
deterministic 20 % of the training videos is held out. A video OpenCV cannot open or decode is
reported by read_frames() as None; the caller logs and skips it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v"}
# label 1 = violent; the names seen in RWF-2000, Hockey/Movies fights, RLVS
POSITIVE = {"fight", "fights", "violence", "violent", "v"}
NEGATIVE = {"nonfight", "nonfights", "nonviolence", "nonviolent", "nv", "non_fight", "no_fight"}
VAL_DIRS = {"val", "valid", "validation", "test"}
CLASS_NAMES = ("NonFight", "Fight")


@dataclass(frozen=True)
class Video:
    path: Path
    label: int  # 1 = violent
    split: str  # "train" or "val"


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace(" ", "")


def scan(root: Path) -> list[Video]:
    """Every video under class folders below `root`, sorted by path (a stable order)."""
    found: list[Video] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXT or not path.is_file():
            continue
        parts = [_norm(p) for p in path.relative_to(root).parts[:-1]]
        label = None
        for part in reversed(parts):  # the nearest class folder wins
            if part in POSITIVE or part in NEGATIVE:
                label = 1 if part in POSITIVE else 0
                break
        if label is None:
            continue
        split = "val" if any(p in VAL_DIRS for p in parts) else "train"
        found.append(Video(path, label, split))
    if found and not any(v.split == "val" for v in found):
        found = [_hold_out(v) for v in found]
    return found


def _hold_out(v: Video) -> Video:
    # a hash of the file name, not a random draw: the same videos are held out on every run
    h = int(hashlib.sha1(v.path.name.encode()).hexdigest()[:8], 16)
    return Video(v.path, v.label, "val" if h % 5 == 0 else "train")


def read_frames(path: Path, frames: int, size: int) -> np.ndarray | None:
    """`frames` RGB frames sampled evenly over the video, resized to size x size (uint8,
    (frames, size, size, 3)); None when the file cannot be opened or yields no frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        # every frame is decoded anyway (codecs seek to keyframes), so resize as we go and
        # keep only small frames in memory: RWF-2000 clips are 150 frames of up to 1080p
        kept: list[np.ndarray] = []
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            kept.append(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
    except cv2.error:
        return None
    finally:
        cap.release()
    if not kept:
        return None
    idx = np.linspace(0, len(kept) - 1, frames).round().astype(int)
    out = np.stack([kept[i] for i in idx])
    return out[..., ::-1].copy()  # BGR -> RGB, as keras.applications expects


def write_synthetic(
    root: Path, per_class: int, seed: int, size: int = 64, length: int = 24
) -> int:
    """Write `per_class` clips per class as real video files (MJPG .avi, which every OpenCV
    build encodes) under root/{train,val}/{Fight,NonFight}: "fights" are several blobs moving
    fast and erratically, "non-fights" one blob drifting slowly. Existing files are kept, so a
    rerun (or a resumed run) sees the same files and mtimes, and the feature cache stays valid.
    Returns the number of files written."""
    written = 0
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    n_val = max(1, per_class // 4)
    for label, cls in enumerate(CLASS_NAMES):
        for i in range(per_class):
            split = "val" if i < n_val else "train"
            path = root / split / cls / f"{cls.lower()}_{i:04d}.avi"
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, label, i])
            tmp = path.with_name(f".{path.stem}.tmp.avi")
            out = cv2.VideoWriter(str(tmp), fourcc, 10.0, (size, size))
            if not out.isOpened():
                raise RuntimeError("OpenCV cannot write MJPG video here")
            for frame in _clip(rng, violent=bool(label), size=size, length=length):
                out.write(frame)
            out.release()
            tmp.replace(path)
            written += 1
    return written


def _clip(rng: np.random.Generator, violent: bool, size: int, length: int) -> list[np.ndarray]:
    blobs = int(rng.integers(2, 4)) if violent else 1
    pos = rng.uniform(size * 0.25, size * 0.75, (blobs, 2))
    speed = 6.0 if violent else 0.8
    vel = rng.normal(0, speed, (blobs, 2))
    colours = rng.integers(80, 256, (blobs, 3))
    bg = rng.integers(0, 60, 3)
    frames = []
    for _ in range(length):
        if violent:  # erratic: the velocity jumps every frame
            vel = vel * 0.3 + rng.normal(0, speed, (blobs, 2))
        pos = np.clip(pos + vel, 4, size - 5)
        frame = np.empty((size, size, 3), np.uint8)
        frame[:] = bg
        for (x, y), c in zip(pos, colours, strict=True):
            cv2.circle(frame, (int(x), int(y)), size // 10, tuple(int(v) for v in c), -1)
        noise = rng.integers(0, 12, frame.shape, dtype=np.uint8)
        frames.append(cv2.add(frame, noise))
    return frames
