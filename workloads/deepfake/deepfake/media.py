"""Video files and faces: reading evenly sampled frames, writing clips, and face crops found
with OpenCV's bundled Haar cascade (offline: the XML ships in opencv-python-headless < 5).

A file OpenCV cannot open or decode (empty, truncated, not a video) reads as None: the caller
logs it and leaves it out, it never ends the run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
CASCADE = "haarcascade_frontalface_default.xml"


def read_frames(path: Path, frames: int) -> list[np.ndarray] | None:
    """`frames` RGB frames sampled evenly over a video (or the one frame of an image), at their
    own size; None when the file cannot be opened or yields no frame."""
    if path.suffix.lower() in IMAGE_EXT:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if img is None else [img[..., ::-1].copy()]
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, max(total - 1, 0), frames).round().astype(int).tolist())
        kept: list[np.ndarray] = []
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            # frame counts in headers can be wrong: keep all if it lied, subsample below
            if total <= 0 or i in wanted or i >= total:
                kept.append(frame)
            i += 1
    except cv2.error:
        return None
    finally:
        cap.release()
    if not kept:
        return None
    idx = np.linspace(0, len(kept) - 1, min(frames, len(kept))).round().astype(int)
    return [kept[j][..., ::-1].copy() for j in idx]


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """RGB uint8 frames (T, H, W, 3) -> an mp4 (MPEG-4 part 2, which every OpenCV build
    encodes; its wheels have no H.264 encoder). Written beside and renamed: never half a file."""
    t, h, w, _ = frames.shape
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not out.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.suffix} video here")
    for frame in frames:
        out.write(np.ascontiguousarray(frame[..., ::-1]))
    out.release()
    tmp.replace(path)


class FaceCropper:
    """The largest frontal face in a frame, with a margin, resized to size x size. Frames with
    no face give a centre crop (counted): a fake without a face is still a sample."""

    def __init__(self, size: int, margin: float = 0.25, min_face: int = 24) -> None:
        self.size, self.margin, self.min_face = size, margin, min_face
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV has no {CASCADE} (opencv-python-headless>=5 dropped it)")

    def detect(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the largest face, or None."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side = min(gray.shape)
        if side < self.min_face:
            return None
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5,
            minSize=(self.min_face, self.min_face),
        )  # fmt: skip
        if len(found) == 0:
            return None
        x, y, w, h = max(found, key=lambda r: int(r[2]) * int(r[3]))
        return int(x), int(y), int(w), int(h)

    def crop(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(size x size RGB crop, whether a face was found)."""
        box = self.detect(rgb)
        h, w = rgb.shape[:2]
        if box is None:
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            crop = rgb[y0 : y0 + side, x0 : x0 + side]
        else:
            x, y, bw, bh = box
            side = int(max(bw, bh) * (1 + 2 * self.margin))
            cx, cy = x + bw // 2, y + bh // 2
            x0, y0 = max(cx - side // 2, 0), max(cy - side // 2, 0)
            crop = rgb[y0 : min(y0 + side, h), x0 : min(x0 + side, w)]
        out = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return out, box is not None


def face_image() -> np.ndarray:
    """A real photograph of a face that ships offline: matplotlib's sample grace_hopper.jpg."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read {path}")
    return img[..., ::-1].copy()


def real_clip(rng: np.random.Generator, size: int, length: int) -> np.ndarray:
    """A "real" clip: the photograph under a slow random zoom, pan and lighting drift, with
    sensor noise: camera-like motion of a real face (T, size, size, 3) uint8 RGB."""
    img = face_image()
    h, w = img.shape[:2]
    scale0, scale1 = rng.uniform(0.8, 1.0, 2)
    dx0, dy0, dx1, dy1 = rng.uniform(-0.05, 0.05, 4)
    gain0, gain1 = rng.uniform(0.8, 1.15, 2)
    frames = []
    for t in np.linspace(0, 1, length):
        s = scale0 + (scale1 - scale0) * t
        side = int(min(h, w) * s)
        cx = int(w / 2 + (dx0 + (dx1 - dx0) * t) * w)
        cy = int(h / 2 + (dy0 + (dy1 - dy0) * t) * h)
        x0 = int(np.clip(cx - side // 2, 0, w - side))
        y0 = int(np.clip(cy - side // 2, 0, h - side))
        frame = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (size, size))
        gain = gain0 + (gain1 - gain0) * t
        noisy = frame.astype(np.float32) * gain + rng.normal(0, 3, frame.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(frames)
