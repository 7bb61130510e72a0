"""Synthetic frames for --smoke and the tests: no video dataset is reachable offline.

A "hand" video holds a skin-toned, shaded open palm with five fingers, drawn with OpenCV and
jittered per frame (position, scale, rotation); MediaPipe's palm detector finds it. A "noise"
video holds smooth coloured noise with no hand in it. Everything is seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SKIN = np.array([150, 185, 225], dtype=np.float64)  # BGR


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, dim, slightly textured background (flat colour plus blurred noise)."""
    base = rng.uniform(40, 90, 3)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)), (0, 0), 6)
    return np.clip(base + noise, 0, 255)


def hand_frame(rng: np.random.Generator, h: int = 240, w: int = 320) -> np.ndarray:
    """One BGR uint8 frame with an open right-hand palm, fingers up, randomly placed."""
    img = _background(rng, h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    s = min(h, w) / 240 * rng.uniform(0.85, 1.1)
    cx, cy = w / 2 + rng.uniform(-20, 20) * s, h * 0.62 + rng.uniform(-10, 10) * s
    # palm
    cv2.ellipse(mask, (int(cx), int(cy)), (int(42 * s), int(50 * s)), 0, 0, 360, 255, -1)
    # four fingers (index..little), then the thumb out to the side
    fingers = [(-30, 62, 14), (-10, 72, 15), (11, 68, 15), (30, 54, 13)]
    for dx, length, width in fingers:
        x0, y0 = cx + dx * s, cy - 38 * s
        x1, y1 = x0 + dx * 0.12 * s, y0 - length * s
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 255, int(width * s))
        cv2.circle(mask, (int(x1), int(y1)), int(width * s / 2), 255, -1)
    tx0, ty0 = cx - 38 * s, cy + 5 * s
    tx1, ty1 = tx0 - 30 * s, ty0 - 38 * s
    cv2.line(mask, (int(tx0), int(ty0)), (int(tx1), int(ty1)), 255, int(16 * s))
    cv2.circle(mask, (int(tx1), int(ty1)), int(8 * s), 255, -1)
    # wrist
    cv2.rectangle(mask, (int(cx - 30 * s), int(cy + 30 * s)), (int(cx + 30 * s), h), 255, -1)
    angle = rng.uniform(-12, 12)
    rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    mask = cv2.warpAffine(mask, rot, (w, h))
    # shading: darker at the edges of the shape (a blurred mask), lit from the top left
    soft = cv2.GaussianBlur(mask.astype(np.float64) / 255, (0, 0), 4 * s)
    yy, xx = np.mgrid[0:h, 0:w]
    light = 0.85 + 0.15 * (1 - (xx / w + yy / h) / 2)
    skin = SKIN * rng.uniform(0.9, 1.05) * (0.6 + 0.4 * soft[..., None]) * light[..., None]
    alpha = cv2.GaussianBlur(mask.astype(np.float64) / 255, (0, 0), 1.0)[..., None]
    out = img * (1 - alpha) + skin * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def noise_frame(rng: np.random.Generator, h: int = 240, w: int = 320) -> np.ndarray:
    return _background(rng, h, w).astype(np.uint8)


def write_dataset(
    root: Path, hand_videos: int, noise_videos: int, frames: int, seed: int = 0
) -> tuple[Path, Path]:
    """FRAMES/<video_id>/frame_NNNN.jpg plus annotations.json ({video_id: {"label": ...}}).

    Also: one corrupt jpg in the first hand video and one annotated video that has no folder,
    so every run exercises both skip paths. Returns (frames_dir, annotations)."""
    rng = np.random.default_rng(seed)
    frames_dir = root / "frames"
    annotations: dict[str, dict[str, str]] = {}
    for i in range(hand_videos + noise_videos):
        hand = i < hand_videos
        vid = f"{'hand' if hand else 'noise'}_{i:03d}"
        folder = frames_dir / vid
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            frame = hand_frame(rng) if hand else noise_frame(rng)
            cv2.imwrite(str(folder / f"frame_{t:04d}.jpg"), frame)
        annotations[vid] = {"label": "hand" if hand else "none"}
    if hand_videos:
        (frames_dir / "hand_000" / "frame_9999.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    annotations["missing_video"] = {"label": "hand"}
    ann = root / "annotations.json"
    ann.write_text(json.dumps(annotations, indent=1))
    return frames_dir, ann
