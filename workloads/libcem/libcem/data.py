"""Image sources: CIFAR-10 from its python-pickle batches, or a procedural dead-leaves set.

No torchvision (it does not load against the CPU torch build, and it would download): CIFAR-10 is
read straight from `data_batch_1..5` / `test_batch` (a folder, its `cifar-10-batches-py/`
subfolder, or the `cifar-10-python.tar.gz` archive itself, read without unpacking).

Fallback, when no CIFAR-10 is present: the "dead leaves" model (Matheron; Lee, Mumford & Huang
2001): opaque discs with a power-law size distribution, painted over each other. Its images share
the statistics that make natural-image denoising hard and learnable - scale invariance, sharp
occlusion edges, flat regions, a ~1/f^2 power spectrum - so the denoiser has real structure to
exploit (white noise would have none). It is seeded, offline and needs no imaging library, which
is why it was chosen over images shipped inside packages (those need PIL/scikit-learn to decode).
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CIFAR_SUBDIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR_PIXELS = 3 * 32 * 32

# The only globals a CIFAR pickle may name: numpy's array reconstruction. Anything else (os.system,
# builtins.eval...) means the file is not a CIFAR batch, and unpickling it would run its code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"),
}


class DataError(Exception):
    """Unusable input data; the message says which file and why."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def _decode_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,3,32,32), labels int64 (N,)) from one pickled batch; DataError if bad."""
    try:
        # encoding="bytes": the official batches were pickled by Python 2 (keys are b"data").
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "corrupt file"
        raise DataError(f"{name}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        shape = getattr(data, "shape", None)
        raise DataError(f"{name}: 'data' must be an (N, {CIFAR_PIXELS}) array, got {shape}")
    if labels is None or len(labels) != data.shape[0]:
        raise DataError(f"{name}: 'labels' missing or not one per image")
    images = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)


def find_cifar(root: Path) -> Path | None:
    """The folder holding the batches, or the archive, under `root`; None when absent."""
    for candidate in (
        root,
        root / CIFAR_SUBDIR,
        root / "cifar10",
        root / "cifar10" / CIFAR_SUBDIR,
    ):
        if candidate.is_dir() and any((candidate / n).exists() for n in TRAIN_BATCHES):
            return candidate
    for archive in (root / CIFAR_ARCHIVE, root / "cifar10" / CIFAR_ARCHIVE):
        if archive.is_file():
            return archive
    # one level down: inputs land under their dataset's name (e.g. a Kaggle slug)
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for candidate in (sub, sub / CIFAR_SUBDIR):
            if candidate.is_dir() and any((candidate / n).exists() for n in TRAIN_BATCHES):
                return candidate
        if (sub / CIFAR_ARCHIVE).is_file():
            return sub / CIFAR_ARCHIVE
    return None


def _batch_files(source: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, reader) for every batch found in a folder or the tar.gz archive."""
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if source.is_dir():
        for n in wanted:
            if (source / n).exists():
                yield n, (source / n).read_bytes
        return
    try:
        with tarfile.open(source, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for n in wanted:
                if n in members:
                    f = tar.extractfile(members[n])
                    data = f.read() if f is not None else b""
                    yield n, lambda data=data: data
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{source}: not a readable CIFAR-10 archive ({e})") from e


def load_cifar(
    source: Path, log: Callable[[str], None]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(train uint8 (N,3,32,32), test uint8 or None). A corrupt batch is logged and skipped, so
    one bad download does not cost the run; no usable training batch at all is a DataError."""
    train: list[np.ndarray] = []
    test: np.ndarray | None = None
    for name, read in _batch_files(source):
        try:
            images, _labels = _decode_batch(read(), name)
        except (DataError, OSError) as e:
            log(f"warning: skipping corrupt CIFAR-10 batch {source / name}: {e}")
            continue
        if name == TEST_BATCH:
            test = images
        else:
            train.append(images)
    if not train:
        raise DataError(f"no usable CIFAR-10 training batch (data_batch_1..5) in {source}")
    test_t = torch.from_numpy(test) if test is not None else None
    return torch.from_numpy(np.concatenate(train)), test_t


def dead_leaves(n: int, size: int, seed: int, leaves: int = 80) -> torch.Tensor:
    """`n` seeded dead-leaves RGB images (n, 3, size, size), uint8 like CIFAR-10.

    Each image gets a palette of a few hues (natural scenes have correlated colours) and
    `leaves` discs whose radii follow p(r) ~ r^-3 between 1 px and size/2 - the scale-invariant
    law of the model. A faint shading gradient per disc keeps regions from being perfectly flat.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    base = torch.rand(n, 3, 1, 1, generator=g)
    img = base.expand(n, 3, size, size).clone()
    palette = torch.rand(n, 4, 3, generator=g)
    r_min, r_max = 1.0, size / 2
    for _ in range(leaves):
        # inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max]
        u = torch.rand(n, generator=g)
        r = 1.0 / torch.sqrt(u / r_max**2 + (1 - u) / r_min**2)
        cx = torch.rand(n, generator=g) * size
        cy = torch.rand(n, generator=g) * size
        pick = torch.randint(0, palette.shape[1], (n,), generator=g)
        colour = palette[torch.arange(n), pick] + 0.15 * (torch.rand(n, 3, generator=g) - 0.5)
        d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
        mask = (d2 <= r[:, None, None] ** 2)[:, None]
        angle = torch.rand(n, generator=g) * 2 * math.pi
        ramp = (
            xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
        )
        shade = 0.1 * (ramp / size - 0.5)[:, None]
        img = torch.where(mask, (colour[:, :, None, None] + shade).clamp(0, 1), img)
    return (img * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)
