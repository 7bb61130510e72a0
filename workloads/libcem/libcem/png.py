"""Minimal PNG writer (zlib + struct) and sample grids, so the image needs no imaging library."""

from __future__ import annotations

import struct
import zlib

import torch


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return (
        struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    )


def encode_png(rgb: torch.Tensor) -> bytes:
    """An 8-bit RGB PNG of a (3, H, W) uint8 tensor (filter type 0 on every row)."""
    if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) uint8 tensor, got {tuple(rgb.shape)} {rgb.dtype}")
    _, h, w = rgb.shape
    rows = rgb.permute(1, 2, 0).contiguous().reshape(h, w * 3)
    raw = torch.cat([torch.zeros(h, 1, dtype=torch.uint8), rows], dim=1).numpy().tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def grid(rows: list[torch.Tensor], pad: int = 2, scale: int = 2) -> torch.Tensor:
    """Stack image rows (each (N, 3, H, W) floats in [0, 1]) into one uint8 (3, H', W') image,
    upscaled by `scale` (nearest) so 32x32 tiles are visible, with white gaps between tiles."""
    n, _, h, w = rows[0].shape
    th, tw = h * scale + pad, w * scale + pad
    out = torch.ones(3, len(rows) * th + pad, n * tw + pad)
    for r, row in enumerate(rows):
        big = row.detach().float().cpu().clamp(0, 1)
        big = big.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        for i in range(n):
            y, x = pad + r * th, pad + i * tw
            out[:, y : y + h * scale, x : x + w * scale] = big[i]
    return (out * 255).round().to(torch.uint8)
