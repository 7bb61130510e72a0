"""What runs in each pool worker: one HandLandmarker per process, one video per task.

Workers are started with `spawn` (a forked MediaPipe graph or its threads can deadlock), build
their landmarker once in the pool initializer, and write each video's .npz themselves, so only
a small dict travels back to the parent. Unreadable frames are counted and skipped; a video
whose folder is gone or unreadable comes back as an error, never an exception that would end
the pool.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_npz

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARKS = 21
HANDEDNESS = {"Left": 0, "Right": 1}

# The worker's landmarker: set by init_worker in each spawned process, used by every task there.
_LANDMARKER: Any = None


@dataclass(frozen=True)
class Task:
    video_id: str
    folder: str
    out_path: str
    label: Any
    stride: int


def frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def init_worker(model: str, num_hands: int, min_conf: float) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when to stop, and a SIGTERM
    # still ends a worker at once (the parent treats the broken pool as the stop it asked for)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _LANDMARKER
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model),
        running_mode=vision.RunningMode.IMAGE,
        num_hands=num_hands,
        min_hand_detection_confidence=min_conf,
        min_hand_presence_confidence=min_conf,
        min_tracking_confidence=min_conf,
    )
    _LANDMARKER = vision.HandLandmarker.create_from_options(options)
    import atexit

    # closed explicitly: its __del__ at interpreter exit prints a TypeError instead
    atexit.register(_LANDMARKER.close)


def process_video(task: Task, num_hands: int) -> dict[str, Any]:
    """Landmarks of every `stride`-th frame of one video -> <video_id>.npz; a manifest row."""
    import cv2
    import mediapipe as mp

    t0 = time.monotonic()
    row: dict[str, Any] = {"video_id": task.video_id, "label": task.label, "pid": os.getpid()}
    try:
        files = frame_files(Path(task.folder))[:: task.stride]
    except OSError as e:
        return {**row, "status": "error", "error": f"cannot list {task.folder}: {e.strerror}"}
    if not files:
        return {**row, "status": "error", "error": f"no frames in {task.folder}"}
    n = len(files)
    landmarks = np.zeros((n, num_hands, LANDMARKS, 3), dtype=np.float32)
    world = np.zeros((n, num_hands, LANDMARKS, 3), dtype=np.float32)
    present = np.zeros((n, num_hands), dtype=bool)
    handedness = np.full((n, num_hands), -1, dtype=np.int8)  # 0 Left, 1 Right, -1 none
    scores = np.zeros((n, num_hands), dtype=np.float32)
    readable = np.ones(n, dtype=bool)
    bad: list[str] = []
    for t, path in enumerate(files):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            readable[t] = False
            bad.append(path.name)
            continue
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        result = _LANDMARKER.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        for k, hand in enumerate(result.hand_landmarks[:num_hands]):
            landmarks[t, k] = [(p.x, p.y, p.z) for p in hand]
            if k < len(result.hand_world_landmarks):
                world[t, k] = [(p.x, p.y, p.z) for p in result.hand_world_landmarks[k]]
            present[t, k] = True
            if k < len(result.handedness) and result.handedness[k]:
                cat = result.handedness[k][0]
                handedness[t, k] = HANDEDNESS.get(cat.category_name, -1)
                scores[t, k] = cat.score
    atomic_write_npz(
        Path(task.out_path),
        landmarks=landmarks,
        world_landmarks=world,
        present=present,
        handedness=handedness,
        scores=scores,
        readable=readable,
        frames=np.array([p.name for p in files]),
    )
    return {
        **row,
        "status": "ok",
        "frames": n,
        "frames_read": int(readable.sum()),
        "frames_with_hand": int(present.any(axis=1).sum()),
        "bad_frames": bad,
        "seconds": round(time.monotonic() - t0, 4),
        # peak RSS of this worker so far (kB on Linux): the per-worker memory to plan with
        "worker_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
