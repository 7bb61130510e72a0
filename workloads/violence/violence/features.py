"""VGG19 frame features, cached on disk so that only the first run pays for the CNN.

One .npz per video, named by a hash of what determines its features: the video's absolute
path, its mtime and size (a replaced file is re-extracted), frames per video, frame size and
the backbone's weights (with random weights, also the seed that drew them). Epochs never run
the CNN: the features are extracted once, before training, and held in memory.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes
from .videos import Video, read_frames

DECODE_WORKERS = 4  # decoder threads
DECODE_AHEAD = 8  # videos decoded ahead of the CNN (~3 MB each at 20 x 224 x 224 x 3)


@dataclass
class FeatureStats:
    extracted: int = 0
    cached: int = 0
    failed: list[str] = field(default_factory=list)  # paths of unreadable videos
    cnn_seconds: float = 0.0
    frames: int = 0


def cache_key(path: Path, frames: int, size: int, weights: str, seed: int) -> str:
    st = path.stat()
    backbone = f"vgg19:{weights}" + (f":seed{seed}" if weights == "none" else "")
    raw = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{frames}|{size}|{backbone}"
    return hashlib.sha1(raw.encode()).hexdigest()


class Extractor:
    """VGG19 without its classifier, global-average-pooled: 512 features per frame.

    Built lazily: a run whose every video is cached never constructs (or imports) the CNN."""

    def __init__(self, size: int, weights: str, batch: int, seed: int) -> None:
        self.size, self.weights, self.batch, self.seed = size, weights, batch, seed
        self._model = None

    def _build(self):  # noqa: ANN202 - a keras.Model; keras is imported lazily
        import keras

        # random weights are drawn from the seed: the cache key names it, so they must match
        keras.utils.set_random_seed(self.seed)
        self._model = keras.applications.VGG19(
            include_top=False,
            weights=None if self.weights == "none" else self.weights,
            input_shape=(self.size, self.size, 3),
            pooling="avg",
        )
        return self._model

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from keras.applications.vgg19 import preprocess_input

        model = self._model or self._build()
        x = preprocess_input(frames.astype(np.float32))
        outs = [
            np.asarray(model(x[i : i + self.batch], training=False), dtype=np.float32)
            for i in range(0, len(x), self.batch)
        ]
        return np.concatenate(outs)


def load_features(
    videos: list[Video],
    cache_dir: Path,
    extractor: Extractor,
    frames: int,
    seed: int,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
) -> tuple[list[Video], np.ndarray, FeatureStats] | None:
    """(usable videos, features (n, frames, 512) float32, stats); None if stopped part-way.

    Unreadable videos are logged and left out; every extracted video is cached at once, so a
    run stopped here keeps its progress. Videos not in the cache are decoded DECODE_AHEAD
    ahead by threads (OpenCV releases the GIL while decoding), so the CNN is not left waiting
    on the decoder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stats = FeatureStats()
    entries: list[tuple[Video, Path]] = []
    for v in videos:
        try:
            key = cache_key(v.path, frames, extractor.size, extractor.weights, seed)
        except OSError as e:
            log(f"warning: skipping unreadable video {v.path}: {e.strerror or e}")
            stats.failed.append(str(v.path))
            continue
        entries.append((v, cache_dir / f"{key}.npz"))
    todo = iter([v.path for v, cached in entries if not cached.is_file()])
    kept: list[Video] = []
    feats: list[np.ndarray] = []
    t_log = time.monotonic()
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        ahead: dict[Path, Future[np.ndarray | None]] = {}

        def top_up() -> None:
            while len(ahead) < DECODE_AHEAD and (path := next(todo, None)) is not None:
                ahead[path] = pool.submit(read_frames, path, frames, extractor.size)

        for n, (v, cached) in enumerate(entries, 1):
            if should_stop():
                for fut in ahead.values():
                    fut.cancel()
                return None
            f = _read_cached(cached)
            if f is not None and f.shape[0] == frames:
                stats.cached += 1
            else:
                top_up()
                fut = ahead.pop(v.path, None)
                clip = fut.result() if fut else read_frames(v.path, frames, extractor.size)
                top_up()
                if clip is None:
                    log(f"warning: skipping corrupt or unreadable video {v.path}")
                    stats.failed.append(str(v.path))
                    continue
                t0 = time.monotonic()
                # rounded to float16 as stored, so a run that extracted and a run that read
                # the cache train on identical numbers (a resumed run matches)
                f = extractor(clip).astype(np.float16)
                stats.cnn_seconds += time.monotonic() - t0
                stats.frames += len(clip)
                stats.extracted += 1
                buf = io.BytesIO()
                np.savez(buf, features=f)  # float16: half the disk, plenty of precision
                atomic_write_bytes(cached, buf.getvalue())
            kept.append(v)
            feats.append(f.astype(np.float32))
            if time.monotonic() - t_log > 30:
                t_log = time.monotonic()
                log(f"features: {n}/{len(entries)} videos ({stats.extracted} extracted)")
    arr = np.stack(feats) if feats else np.zeros((0, frames, 512), np.float32)
    return kept, arr, stats


def _read_cached(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["features"])
    except Exception:  # noqa: BLE001 - a damaged cache entry is simply recomputed
        return None
