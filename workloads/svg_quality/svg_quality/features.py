"""ResNet-50 image features (2048-d, global-average pooled), computed once and cached.

The backbone is transformers' ResNetModel: no torchvision or timm (on CPU test machines their
wheels are CUDA builds that break imports). `--backbone microsoft/resnet-50` loads ImageNet
weights from the Hugging Face hub (GPU runs: the machine needs internet or a filled HF cache);
`--backbone random` builds the same ResNet-50 from its config with seeded random weights, for
offline tests and smoke runs, where the features are a fixed random projection of the image.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
FEATURE_DIM = 2048


class BackboneError(Exception):
    """The backbone cannot be built or loaded; the message says why."""


class Backbone(torch.nn.Module):
    """image batch (B, 3, H, W) in [0, 1] -> (B, 2048) pooled ResNet-50 features."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        if name == "random":
            torch.manual_seed(seed)
            self.net = ResNetModel(ResNetConfig())  # the default config is ResNet-50
        else:
            try:
                self.net = ResNetModel.from_pretrained(name)
            except (OSError, ValueError) as e:
                raise BackboneError(
                    f"cannot load --backbone {name} ({str(e).splitlines()[0]}); it needs the "
                    "Hugging Face hub or a local copy; --backbone random works offline"
                ) from None
        dim = self.net.config.hidden_sizes[-1]
        if dim != FEATURE_DIM:
            raise BackboneError(f"--backbone {name} gives {dim}-d features, not {FEATURE_DIM}")
        self.net.eval()
        self.register_buffer("mean", MEAN.clone())
        self.register_buffer("std", STD.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        return self.net(pixel_values=x).pooler_output.flatten(1)


def to_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    arr = np.stack(
        [np.asarray(im.resize((size, size), Image.Resampling.BILINEAR)) for im in images]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def extract(
    backbone: Backbone,
    images: list[Image.Image],
    size: int,
    batch: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[np.ndarray, float]:
    """(N, 2048) float32 features and the images/s it ran at."""
    out = []
    t0 = time.monotonic()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = to_tensor(images[i : i + batch], size).to(device)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                out.append(backbone(x).float().cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.monotonic() - t0
    return torch.cat(out).numpy(), len(images) / seconds if seconds > 0 else 0.0


def cached_features(
    names: list[str],
    images: list[Image.Image],
    backbone_name: str,
    size: int,
    seed: int,
    cache: Path,
    make: Callable[[], tuple[np.ndarray, float]],
    log: Callable[[str], None],
) -> tuple[np.ndarray, float | None]:
    """features.npy for these images and this backbone: from the cache, or made and cached."""
    h = hashlib.sha256(f"{backbone_name}|{size}|{seed}|{names}".encode())
    for im in images:
        h.update(im.tobytes())
    path = cache / f"features-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        feats = np.load(path)
        if feats.shape == (len(images), FEATURE_DIM):
            log(f"features: {len(images)} images from the cache {path.name}")
            return feats, None
        log(f"features: ignoring {path.name} (shape {feats.shape})")
    feats, rate = make()
    buf = io.BytesIO()
    np.save(buf, feats.astype(np.float32))
    from .checkpoint import atomic_write_bytes

    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    log(f"features: {len(images)} images through ResNet-50 ({backbone_name}) at {rate:.1f} img/s")
    return feats, rate
