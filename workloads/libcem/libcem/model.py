"""The graph-diffusion patch denoiser.

An image is cut into patches (F.unfold). Per image, the patches form a dense similarity graph:

    W_ij = exp(-d2_ij / (2 sigma^2)) * sigmoid((radius - d_ij) / GATE_T),   d2 = mean sq. diff

`sigma` is not trained by gradient: an EM step fits it in closed form (E: responsibilities
r_ij = softmax_j(-d2_ij / 2 sigma^2); M: sigma^2 = sum_j r_ij d2_ij), smoothed by an EMA, because
the kernel width is a density-estimation parameter that gradient descent tends to collapse.
`radius` (a soft neighbourhood gate) and `tau` (the heat step) are learned by gradient, each
constrained to its valid range (softplus, sigmoid): unconstrained, radius went negative.

Diffusion: K explicit heat steps x <- x - tau L x with the random-walk Laplacian L = I - D^-1 W,
stable for tau <= 1 since L's eigenvalues lie in [0, 2]. Then multi-head attention over patch
tokens (noisy + diffused patch + position), biased by log W so heads prefer graph neighbours,
predicts a residual correction. Overlapping patches are folded back by averaging.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GATE_T = 0.05  # softness of the radius gate, in the same units as d (RMS pixel difference)
LOG_FLOOR = -30.0  # log W below this is clamped: keeps the attention bias finite
EPS = 1e-8


@dataclass(frozen=True)
class ModelConfig:
    patch: int = 4
    stride: int = 4
    channels: int = 3
    embed: int = 64
    heads: int = 4
    steps: int = 3  # heat-diffusion steps
    sigma0: float = 0.3  # the seed's initial values
    tau0: float = 0.1
    radius0: float = 0.6
    em_momentum: float = 0.9  # EMA of the EM estimate of sigma, per training batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class GraphDiffusionDenoiser(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.embed % cfg.heads:
            raise ValueError(f"embed {cfg.embed} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        dim = cfg.channels * cfg.patch * cfg.patch
        self.register_buffer("sigma", torch.tensor(float(cfg.sigma0)))
        self.tau_raw = nn.Parameter(torch.tensor(_logit(cfg.tau0)))
        self.radius_raw = nn.Parameter(torch.tensor(_inv_softplus(cfg.radius0)))
        self.embed = nn.Linear(2 * dim, cfg.embed)
        self.pos = nn.Linear(2, cfg.embed)
        self.attn = nn.MultiheadAttention(cfg.embed, cfg.heads, batch_first=True)
        self.norm1 = nn.LayerNorm(cfg.embed)
        self.ff = nn.Sequential(
            nn.Linear(cfg.embed, 2 * cfg.embed), nn.GELU(), nn.Linear(2 * cfg.embed, cfg.embed)
        )
        self.norm2 = nn.LayerNorm(cfg.embed)
        self.out = nn.Linear(cfg.embed, dim)
        # Start as pure diffusion: the attention branch learns a correction from zero.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def tau(self) -> torch.Tensor:
        return torch.sigmoid(self.tau_raw)

    @property
    def radius(self) -> torch.Tensor:
        return F.softplus(self.radius_raw)

    def graph_params(self) -> dict[str, float]:
        return {
            "sigma": float(self.sigma),
            "tau": float(self.tau.detach()),
            "radius": float(self.radius.detach()),
        }

    # ------------------------------------------------------------------ patches

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C*p*p)."""
        return F.unfold(x, self.cfg.patch, stride=self.cfg.stride).transpose(1, 2)

    def _fold(self, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Inverse of _patches; overlapping pixels are averaged."""
        p, s = self.cfg.patch, self.cfg.stride
        cols = patches.transpose(1, 2)
        summed = F.fold(cols, size, p, stride=s)
        count = F.fold(torch.ones_like(cols), size, p, stride=s)
        return summed / count.clamp_min(1.0)

    def _coords(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Patch top-left corners, scaled to [-1, 1]: (N, 2)."""
        p, s = self.cfg.patch, self.cfg.stride
        ys = torch.arange(0, size[0] - p + 1, s, device=device, dtype=torch.float32)
        xs = torch.arange(0, size[1] - p + 1, s, device=device, dtype=torch.float32)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gy.flatten(), gx.flatten()], dim=1)
        return coords / max(size[0] - p, size[1] - p, 1) * 2 - 1

    # ------------------------------------------------------------------ graph

    def _graph(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log W, d2), both (B, N, N), computed in float32 whatever the autocast dtype:
        exp(-d2 / 2 sigma^2) underflows in half precision."""
        x = patches.float()
        sq = (x * x).sum(-1)
        d2 = (sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(1, 2)).clamp_min(0)
        d2 = d2 / x.shape[-1]
        d = torch.sqrt(d2 + EPS)
        sigma = self.sigma.detach()
        log_w = -d2 / (2 * sigma * sigma) + F.logsigmoid((self.radius - d) / GATE_T)
        return log_w.clamp_min(LOG_FLOOR), d2

    @torch.no_grad()
    def em_step(self, d2: torch.Tensor) -> None:
        """One EM update of sigma from a batch's pairwise distances (self-pairs excluded)."""
        n = d2.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=d2.device)
        logits = (-d2 / (2 * self.sigma**2)).masked_fill(eye, float("-inf"))
        resp = torch.softmax(logits, dim=-1)  # E-step
        sigma2 = (resp * d2.masked_fill(eye, 0.0)).sum(-1).mean()  # M-step
        new = torch.sqrt(sigma2.clamp_min(1e-6))
        m = self.cfg.em_momentum
        self.sigma.mul_(m).add_((1 - m) * new.to(self.sigma.dtype))

    # ------------------------------------------------------------------ forward

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        size = (noisy.shape[-2], noisy.shape[-1])
        patches = self._patches(noisy)
        n = patches.shape[1]
        with torch.autocast(device_type=noisy.device.type, enabled=False):
            log_w, d2 = self._graph(patches)
            if self.training:
                self.em_step(d2)
            eye = torch.eye(n, dtype=torch.bool, device=noisy.device)
            w = log_w.masked_fill(eye, float("-inf")).exp()
            p_rw = w / (w.sum(-1, keepdim=True) + EPS)  # D^-1 W, row-stochastic
            x = patches.float()
            tau = self.tau
            for _ in range(self.cfg.steps):
                x = x - tau * (x - p_rw @ x)  # x <- x - tau L x
        diffused = x
        tokens = self.embed(torch.cat([patches, diffused.to(patches.dtype)], dim=-1))
        tokens = tokens + self.pos(self._coords(size, noisy.device))[None]
        bias = log_w.to(tokens.dtype).repeat_interleave(self.cfg.heads, dim=0)
        attended, _ = self.attn(tokens, tokens, tokens, attn_mask=bias, need_weights=False)
        h = self.norm1(tokens + attended)
        h = self.norm2(h + self.ff(h))
        out = diffused + self.out(h).float()
        return self._fold(out, size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
