"""CNN, ViT and ensemble detectors, from transformers' image classification models.

No timm or torchvision: transformers' ResNet / EfficientNet / ViT build from a config with
random weights (offline, for tests and from-scratch training) or load pretrained weights from
the hub (--init pretrained, on a machine with internet). A checkpoint stores each member's
config as JSON, so a saved detector is rebuilt without any download.

An ensemble holds one CNN and one ViT, trained together (the loss is the mean of the members'
losses) and scored by the mean of their fake probabilities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# backbone -> (family, config class, model class, pretrained hub id, input mean, input std)
BACKBONES: dict[str, tuple[str, str, str, str, float, float]] = {
    "resnet50": ("cnn", "ResNetConfig", "ResNetForImageClassification", "microsoft/resnet-50",
                 0.45, 0.226),
    "efficientnet_b0": ("cnn", "EfficientNetConfig", "EfficientNetForImageClassification",
                        "google/efficientnet-b0", 0.45, 0.226),
    "vit_b16": ("vit", "ViTConfig", "ViTForImageClassification",
                "google/vit-base-patch16-224", 0.5, 0.5),
}  # fmt: skip


def _full_config(backbone: str, img_size: int) -> dict[str, Any]:
    if backbone == "resnet50":
        return {}  # ResNetConfig() is ResNet-50
    if backbone == "efficientnet_b0":  # EfficientNetConfig() defaults to B7
        return {"width_coefficient": 1.0, "depth_coefficient": 1.0, "hidden_dim": 1280,
                "image_size": img_size, "dropout_rate": 0.2}  # fmt: skip
    return {"image_size": img_size}  # ViTConfig() is ViT-B/16


def _tiny_config(backbone: str, img_size: int) -> dict[str, Any]:
    """A few thousand parameters of the same architecture: CPU tests in seconds."""
    if backbone == "resnet50":
        return {"embedding_size": 16, "hidden_sizes": [16, 32, 64], "depths": [1, 1, 1],
                "layer_type": "basic"}  # fmt: skip
    if backbone == "efficientnet_b0":
        # hidden_dim must equal round_filters(1280) at this width: 1280 * 0.25 = 320
        return {"width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320,
                "image_size": img_size}  # fmt: skip
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "image_size": img_size, "patch_size": 8}  # fmt: skip


class Member(nn.Module):
    """One classifier: [0, 1] RGB (B, 3, H, W) in, 2 logits (real, fake) out."""

    def __init__(self, backbone: str, model: nn.Module) -> None:
        super().__init__()
        family, *_, mean, std = BACKBONES[backbone]
        self.backbone, self.family, self.model = backbone, family, model
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.family == "vit":  # any input size, not only the pretrained 224
            return self.model(pixel_values=x, interpolate_pos_encoding=True).logits
        return self.model(pixel_values=x).logits


class Detector(nn.Module):
    """One or more members; forward gives each member's logits."""

    def __init__(self, members: dict[str, Member]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: m(x) for name, m in self.members.items()}

    @staticmethod
    def fake_prob(logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over members of P(fake): the ensemble's score."""
        probs = [torch.softmax(v.float(), dim=-1)[:, 1] for v in logits.values()]
        return torch.stack(probs).mean(0)


@dataclass
class Spec:
    """What rebuilds a detector: member name -> (backbone, config JSON)."""

    members: dict[str, tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"members": {k: list(v) for k, v in self.members.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        return cls({k: (str(v[0]), str(v[1])) for k, v in d["members"].items()})


def _classes(backbone: str) -> tuple[Any, Any]:
    import transformers

    _, cfg, mdl, *_ = BACKBONES[backbone]
    return getattr(transformers, cfg), getattr(transformers, mdl)


def member_names(kind: str, cnn: str, vit: str) -> dict[str, str]:
    if kind == "cnn":
        return {"cnn": cnn}
    if kind == "vit":
        return {"vit": vit}
    return {"cnn": cnn, "vit": vit}


def build(
    kind: str, cnn: str, vit: str, *, init: str, tiny: bool, img_size: int
) -> tuple[Detector, Spec]:
    """A new detector (random or pretrained weights) and the spec that rebuilds it."""
    members: dict[str, Member] = {}
    spec: dict[str, tuple[str, str]] = {}
    for name, backbone in member_names(kind, cnn, vit).items():
        cfg_cls, model_cls = _classes(backbone)
        labels = {"num_labels": 2, "id2label": {0: "real", 1: "fake"},
                  "label2id": {"real": 0, "fake": 1}}  # fmt: skip
        if init == "pretrained":
            hub_id = BACKBONES[backbone][3]
            model = model_cls.from_pretrained(hub_id, ignore_mismatched_sizes=True, **labels)
        else:
            extra = _tiny_config(backbone, img_size) if tiny else _full_config(backbone, img_size)
            model = model_cls(cfg_cls(**extra, **labels))
        members[name] = Member(backbone, model)
        spec[name] = (backbone, model.config.to_json_string())
    return Detector(members), Spec(spec)


def rebuild(spec: Spec) -> Detector:
    """The detector of a checkpoint's spec, random weights: load_state_dict follows."""
    members = {}
    for name, (backbone, cfg_json) in spec.members.items():
        cfg_cls, model_cls = _classes(backbone)
        members[name] = Member(backbone, model_cls(cfg_cls.from_dict(json.loads(cfg_json))))
    return Detector(members)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
