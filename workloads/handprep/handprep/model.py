"""The hand landmarker model, available offline.

mediapipe 0.10.21 is the last release that ships its models inside the wheel
(mediapipe/modules/{palm_detection,hand_landmark}/*.tflite). The Tasks API's HandLandmarker
wants a `hand_landmarker.task`, which is a stored (uncompressed) zip of exactly two of them:
hand_detector.tflite (the palm detector) and hand_landmarks_detector.tflite. Building it from
the installed package needs no download; --model takes a ready .task file instead.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

MEMBERS = {
    "hand_detector.tflite": ("palm_detection", "palm_detection_{v}.tflite"),
    "hand_landmarks_detector.tflite": ("hand_landmark", "hand_landmark_{v}.tflite"),
}


class ModelError(Exception):
    """The model cannot be found or built; the message says what to do."""


def bundled_task(cache_dir: Path, variant: str = "full") -> Path:
    """hand_landmarker.task built from the installed mediapipe's bundled models (cached)."""
    import mediapipe as mp

    modules = Path(mp.__file__).parent / "modules"
    sources = {
        name: modules / folder / pattern.format(v=variant)
        for name, (folder, pattern) in MEMBERS.items()
    }
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise ModelError(
            f"mediapipe {getattr(mp, '__version__', '?')} ships no hand models ({missing[0]}); "
            "install mediapipe==0.10.21 (the last release that bundles them) or pass "
            "--model hand_landmarker.task"
        )
    h = hashlib.sha256()
    for p in sources.values():
        h.update(p.read_bytes())
    out = cache_dir / f"hand_landmarker-{variant}-{h.hexdigest()[:12]}.task"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, src in sources.items():
            z.write(src, name)
    os.replace(tmp, out)
    return out


def check_task(path: Path) -> Path:
    """A user-given .task file, checked before any worker starts."""
    if not path.is_file():
        raise ModelError(f"--model {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"--model {path} is not a hand_landmarker.task bundle ({e})") from None
    if not set(MEMBERS) <= names:
        raise ModelError(f"--model {path} lacks {sorted(set(MEMBERS) - names)}")
    return path
