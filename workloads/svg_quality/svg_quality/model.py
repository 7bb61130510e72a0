"""QualityPredictor: 2056 inputs (2048 ResNet-50 features + 8 VTracer parameters) -> [1024,
512, 256] -> 1.

Each hidden block is Linear -> BatchNorm1d -> ReLU -> Dropout; the output is a sigmoid (SSIM is
in [0, 1]). 2,766,337 trainable parameters, as the seed states. The input is standardized with
the training set's mean and std, kept as buffers (not parameters), so the exported models take
raw features.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_DIM = 2056
HIDDEN = (1024, 512, 256)
SEED_PARAMS = 2_766_337


class QualityPredictor(nn.Module):
    def __init__(
        self, input_dim: int = INPUT_DIM, hidden: tuple[int, ...] = HIDDEN, dropout: float = 0.2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("in_mean", torch.zeros(input_dim))
        self.register_buffer("in_std", torch.ones(input_dim))

    def set_input_stats(self, x: torch.Tensor) -> None:
        self.in_mean.copy_(x.mean(0))
        # floor: a feature (nearly) constant over the training images would otherwise turn a
        # small difference on a new image into a huge input and saturate the sigmoid
        std = x.std(0)
        self.in_std.copy_(std.clamp_min(max(0.1 * float(std.mean()), 1e-6)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.in_mean) / self.in_std
        return torch.sigmoid(self.net(x)).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
