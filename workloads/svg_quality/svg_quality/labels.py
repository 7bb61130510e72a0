"""Real labels, made offline: image -> VTracer SVG -> resvg raster -> SSIM against the image.

Each sample is (image, 8 VTracer parameters, SSIM of the traced-and-rasterised result). The
images are PNG/JPG files from --images, or seeded synthetic logos (flat shapes, outlines,
gradients and text, the kind of picture VTracer is for). Labels are cached as labels.npz in the
data folder, keyed by the images and the sampling settings, so a rerun or a resumed run reuses
them.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError

# name, low, high, integer? (VTracer's ranges; defaults in the middle)
PARAMS: list[tuple[str, float, float, bool]] = [
    ("filter_speckle", 1, 16, True),
    ("color_precision", 1, 8, True),
    ("layer_difference", 1, 64, True),
    ("corner_threshold", 10, 180, True),
    ("length_threshold", 3.5, 10.0, False),
    ("max_iterations", 5, 20, True),
    ("splice_threshold", 10, 180, True),
    ("path_precision", 1, 10, True),
]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DataError(Exception):
    """Bad input data; the message says which file or folder."""


@dataclass
class Labels:
    names: list[str]  # one per image
    image_index: np.ndarray  # (N,) int, the image of each sample
    params: np.ndarray  # (N, 8) float, raw VTracer values
    ssim: np.ndarray  # (N,) float in [0, 1]
    seconds: float  # labelling time (0 when read from the cache)


def normalize_params(raw: np.ndarray) -> np.ndarray:
    lo = np.array([p[1] for p in PARAMS])
    hi = np.array([p[2] for p in PARAMS])
    return ((raw - lo) / (hi - lo)).astype(np.float32)


def sample_params(rng: np.random.Generator) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, lo, hi, is_int in PARAMS:
        out[name] = float(rng.integers(int(lo), int(hi) + 1)) if is_int else rng.uniform(lo, hi)
    return out


def synthetic_logo(rng: np.random.Generator, size: int) -> Image.Image:
    """A logo-like RGB picture: flat shapes on a plain background, sometimes outlines, a
    gradient or text: hard or easy for VTracer depending on the parameters."""
    bg = tuple(int(v) for v in rng.integers(180, 256, 3)) if rng.random() < 0.7 else (255,) * 3
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.3:  # a gradient band: colour precision and layer difference matter
        top, bot = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        y0 = int(rng.integers(0, size // 2))
        for y in range(y0, y0 + size // 3):
            t = (y - y0) / (size / 3)
            draw.line([(0, y), (size, y)], fill=tuple(int(v) for v in top * (1 - t) + bot * t))
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        box = [x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h)]
        kind = rng.integers(0, 4)
        width = int(rng.integers(1, max(2, size // 24)))
        if kind == 0:
            draw.ellipse(
                box, fill=colour if rng.random() < 0.7 else None, outline=colour, width=width
            )
        elif kind == 1:
            draw.rectangle(
                box, fill=colour if rng.random() < 0.7 else None, outline=colour, width=width
            )
        elif kind == 2:
            pts = [
                tuple(int(v) for v in rng.integers(0, size, 2))
                for _ in range(int(rng.integers(3, 7)))
            ]
            draw.polygon(pts, fill=colour)
        else:
            draw.line(
                [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)],
                fill=colour,
                width=width,
            )
    if rng.random() < 0.4:
        draw.text(
            (int(rng.integers(0, size // 2)), int(rng.integers(0, size * 3 // 4))),
            "ABC"[: int(rng.integers(1, 4))],
            fill=(0, 0, 0),
        )
    return img


def load_images(
    folder: Path, size: int, limit: int, log: Callable[[str], None]
) -> tuple[list[str], list[Image.Image]]:
    """RGB images from `folder` (recursively), resized to size x size; corrupt files skipped."""
    if not folder.is_dir():
        raise DataError(f"--images {folder} does not exist or is not a folder")
    names, images = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as im:
                im.load()
                rgba = im.convert("RGBA")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            log(f"skipping unreadable image {path} ({type(e).__name__})")
            continue
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))  # transparent logos on white, as rendered
        names.append(str(path.relative_to(folder)))
        images.append(flat.resize((size, size), Image.Resampling.LANCZOS))
        if limit and len(images) >= limit:
            break
    if not images:
        raise DataError(f"no readable images (png/jpg/bmp/webp) under {folder}")
    return names, images


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _gray(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.float32) / 255.0)
    return (0.299 * t[..., 0] + 0.587 * t[..., 1] + 0.114 * t[..., 2])[None, None]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two RGB
    uint8 images on their luma, as skimage's structural_similarity(gaussian_weights=True)."""
    x, y = _gray(a).double(), _gray(b).double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def trace_and_score(img: Image.Image, params: dict[str, float]) -> float:
    """SSIM between `img` and its VTracer SVG rendered back by resvg at the same size."""
    import resvg_py
    import vtracer

    svg = vtracer.convert_raw_image_to_svg(
        png_bytes(img),
        img_format="png",
        colormode="color",
        hierarchical="stacked",
        mode="spline",
        **{
            k: (int(v) if isinstance(v, float) and v.is_integer() else v)
            for k, v in params.items()
        },
    )
    raster = resvg_py.svg_to_bytes(
        svg_string=svg, width=img.width, height=img.height, background="#ffffff"
    )
    with Image.open(io.BytesIO(bytes(raster))) as r:
        back = r.convert("RGB")
    return ssim(np.asarray(img), np.asarray(back))


def cache_key(names: list[str], images: list[Image.Image], per_image: int, seed: int) -> str:
    h = hashlib.sha256(json.dumps([names, per_image, seed]).encode())
    for im in images:
        h.update(im.tobytes())
    return h.hexdigest()[:16]


def make_labels(
    names: list[str],
    images: list[Image.Image],
    per_image: int,
    seed: int,
    cache: Path,
    log: Callable[[str], None],
) -> Labels:
    """per_image random parameter sets per image, traced and scored; cached in `cache`."""
    key = cache_key(names, images, per_image, seed)
    path = cache / f"labels-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            log(f"labels: {len(z['ssim'])} samples from the cache {path.name}")
            return Labels(names, z["image_index"], z["params"], z["ssim"], 0.0)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    idx, raw, scores = [], [], []
    for i, img in enumerate(images):
        for _ in range(per_image):
            p = sample_params(rng)
            idx.append(i)
            raw.append([p[name] for name, *_ in PARAMS])
            scores.append(trace_and_score(img, p))
    seconds = time.monotonic() - t0
    labels = Labels(
        names,
        np.array(idx),
        np.array(raw, dtype=np.float64),
        np.clip(np.array(scores, dtype=np.float32), 0, 1),
        seconds,
    )
    cache.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, image_index=labels.image_index, params=labels.params, ssim=labels.ssim)
    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())
    log(
        f"labels: {len(scores)} samples traced in {seconds:.1f}s "
        f"({1000 * seconds / max(1, len(scores)):.1f} ms each), SSIM "
        f"{labels.ssim.min():.3f}..{labels.ssim.max():.3f}"
    )
    return labels
