"""Known GPUs: one canonical name per model, the aliases people type, and family names.

Canonical names follow Vast.ai's query style (the `vastai` CLI turns `_` into a space, so
`RTX_4090` is what a user types there). Where Vast's own `gpu_name` differs from that spelling
(`Tesla T4`), `GpuInfo.vast` says so. `vram_gb` is the largest memory variant sold under that name
(A100 PCIe comes as 40 and 80 GB), so "too small for min_vram_gb" is only said when every variant
is too small; an offer's own memory figure is what to filter on.

Matching ignores case, spaces, `-` and `_`, and the vendor words people paste from nvidia-smi
("NVIDIA GeForce RTX 4090" resolves to RTX_4090).
"""

from __future__ import annotations

import difflib
from typing import NamedTuple


class GpuInfo(NamedTuple):
    vram_gb: float
    arch: str
    compute_capability: str
    vast: str | None = None  # Vast's gpu_name, when not the canonical name with spaces


# fmt: off
GPUS: dict[str, GpuInfo] = {
    # Blackwell
    "B200":            GpuInfo(180, "Blackwell", "10.0"),
    "RTX_PRO_6000_WS": GpuInfo(96, "Blackwell", "12.0"),
    "RTX_PRO_6000_S":  GpuInfo(96, "Blackwell", "12.0"),
    "RTX_5090":        GpuInfo(32, "Blackwell", "12.0"),
    "RTX_5080":        GpuInfo(16, "Blackwell", "12.0"),
    "RTX_5070_Ti":     GpuInfo(16, "Blackwell", "12.0"),
    "RTX_5070":        GpuInfo(12, "Blackwell", "12.0"),
    "RTX_5060_Ti":     GpuInfo(16, "Blackwell", "12.0"),
    # Hopper
    "H200":            GpuInfo(141, "Hopper", "9.0"),
    "H200_NVL":        GpuInfo(141, "Hopper", "9.0"),
    "H100_SXM":        GpuInfo(80, "Hopper", "9.0"),
    "H100_PCIE":       GpuInfo(80, "Hopper", "9.0"),
    "H100_NVL":        GpuInfo(94, "Hopper", "9.0"),
    "GH200":           GpuInfo(96, "Hopper", "9.0"),
    # Ada Lovelace
    "L40S":            GpuInfo(48, "Ada", "8.9"),
    "L40":             GpuInfo(48, "Ada", "8.9"),
    "L4":              GpuInfo(24, "Ada", "8.9"),
    "RTX_6000Ada":     GpuInfo(48, "Ada", "8.9"),
    "RTX_5000Ada":     GpuInfo(32, "Ada", "8.9"),
    "RTX_4500Ada":     GpuInfo(24, "Ada", "8.9"),
    "RTX_4000Ada":     GpuInfo(20, "Ada", "8.9"),
    "RTX_4090":        GpuInfo(24, "Ada", "8.9"),
    "RTX_4080S":       GpuInfo(16, "Ada", "8.9"),
    "RTX_4080":        GpuInfo(16, "Ada", "8.9"),
    "RTX_4070S_Ti":    GpuInfo(16, "Ada", "8.9"),
    "RTX_4070_Ti":     GpuInfo(12, "Ada", "8.9"),
    "RTX_4070S":       GpuInfo(12, "Ada", "8.9"),
    "RTX_4070":        GpuInfo(12, "Ada", "8.9"),
    "RTX_4060_Ti":     GpuInfo(16, "Ada", "8.9"),
    "RTX_4060":        GpuInfo(8, "Ada", "8.9"),
    # Ampere
    "A100_SXM4":       GpuInfo(80, "Ampere", "8.0"),
    "A100_PCIE":       GpuInfo(80, "Ampere", "8.0"),
    "A100X":           GpuInfo(80, "Ampere", "8.0"),
    "A30":             GpuInfo(24, "Ampere", "8.0"),
    "A40":             GpuInfo(48, "Ampere", "8.6"),
    "A10":             GpuInfo(24, "Ampere", "8.6"),
    "A10G":            GpuInfo(24, "Ampere", "8.6"),
    "RTX_A6000":       GpuInfo(48, "Ampere", "8.6"),
    "RTX_A5000":       GpuInfo(24, "Ampere", "8.6"),
    "RTX_A4500":       GpuInfo(20, "Ampere", "8.6"),
    "RTX_A4000":       GpuInfo(16, "Ampere", "8.6"),
    "RTX_A2000":       GpuInfo(12, "Ampere", "8.6"),
    "RTX_3090_Ti":     GpuInfo(24, "Ampere", "8.6"),
    "RTX_3090":        GpuInfo(24, "Ampere", "8.6"),
    "RTX_3080_Ti":     GpuInfo(12, "Ampere", "8.6"),
    "RTX_3080":        GpuInfo(12, "Ampere", "8.6"),
    "RTX_3070_Ti":     GpuInfo(8, "Ampere", "8.6"),
    "RTX_3070":        GpuInfo(8, "Ampere", "8.6"),
    "RTX_3060_Ti":     GpuInfo(8, "Ampere", "8.6"),
    "RTX_3060":        GpuInfo(12, "Ampere", "8.6"),
    # Turing, Volta, Pascal
    "T4":              GpuInfo(16, "Turing", "7.5", vast="Tesla T4"),
    "Q_RTX_8000":      GpuInfo(48, "Turing", "7.5"),
    "TITAN_RTX":       GpuInfo(24, "Turing", "7.5", vast="Titan RTX"),
    "RTX_2080_Ti":     GpuInfo(11, "Turing", "7.5"),
    "V100":            GpuInfo(32, "Volta", "7.0", vast="Tesla V100"),
    "P100":            GpuInfo(16, "Pascal", "6.0", vast="Tesla P100"),
    "P40":             GpuInfo(24, "Pascal", "6.1", vast="Tesla P40"),
}
# fmt: on

# Names that stand for several models; a spec's `types: [A100]` means any of them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "A100": ("A100_PCIE", "A100_SXM4", "A100X"),
    "H100": ("H100_PCIE", "H100_SXM", "H100_NVL"),
    "RTX_PRO_6000": ("RTX_PRO_6000_WS", "RTX_PRO_6000_S"),
}

# Extra spellings, written any way (they are normalised like user input).
_ALIASES: dict[str, str] = {
    "Tesla T4": "T4",
    "A100 SXM": "A100_SXM4",
    "A100 40GB": "A100",
    "A100 80GB": "A100",
    # nvidia-smi spellings, so a local GPU can be matched against a spec
    "A100-SXM4-40GB": "A100_SXM4",
    "A100-SXM4-80GB": "A100_SXM4",
    "A100-PCIE-40GB": "A100_PCIE",
    "A100 80GB PCIe": "A100_PCIE",
    "H100 80GB HBM3": "H100_SXM",
    "V100-SXM2-16GB": "V100",
    "V100-SXM2-32GB": "V100",
    "V100-PCIE-16GB": "V100",
    "V100-PCIE-32GB": "V100",
    "P100-PCIE-16GB": "P100",
    "H100 SXM5": "H100_SXM",
    "H100 PCIe 80GB": "H100_PCIE",
    "H200 SXM": "H200",
    "RTX 6000 Ada Generation": "RTX_6000Ada",
    "RTX 4080 Super": "RTX_4080S",
    "RTX 4070 Super": "RTX_4070S",
    "RTX 4070 Ti Super": "RTX_4070S_Ti",
    "Quadro RTX 8000": "Q_RTX_8000",
    "RTX 8000": "Q_RTX_8000",
    "V100 SXM2": "V100",
    "V100 PCIE": "V100",
}

_VENDOR_WORDS = ("NVIDIA", "GEFORCE", "TESLA", "QUADRO")


def _norm(name: str) -> str:
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    stripped = True
    while stripped:
        stripped = False
        for word in _VENDOR_WORDS:
            if key.startswith(word) and len(key) > len(word):
                key = key[len(word) :]
                stripped = True
    return key


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for canonical in (*GPUS, *FAMILIES):
        index[_norm(canonical)] = canonical
    for alias, canonical in _ALIASES.items():
        index[_norm(alias)] = canonical
    for canonical in GPUS:
        # "4090" for RTX_4090, "A6000" for RTX_A6000: the model number alone is unambiguous.
        if canonical.startswith("RTX_") and not canonical.startswith("RTX_PRO"):
            index.setdefault(_norm(canonical[4:]), canonical)
    for canonical, info in GPUS.items():
        if info.vast:
            index.setdefault(_norm(info.vast), canonical)
    return index


_INDEX = _index()


def resolve_gpu(name: str) -> str | None:
    """The canonical name (a model in GPUS or a family in FAMILIES) for `name`, or None."""
    return _INDEX.get(_norm(name))


def expand_gpu(name: str) -> tuple[str, ...]:
    """The models `name` stands for: a family's members, or the one model. Empty if unknown."""
    canonical = resolve_gpu(name)
    if canonical is None:
        return ()
    return FAMILIES.get(canonical, (canonical,))


def suggest_gpu(name: str) -> str | None:
    """The closest known canonical name to a misspelt `name`, or None."""
    key = _norm(name)
    if not key:
        return None
    close = difflib.get_close_matches(key, list(_INDEX), n=1, cutoff=0.6)
    return _INDEX[close[0]] if close else None


def gpu_info(name: str) -> GpuInfo | None:
    """Facts about one model (not a family)."""
    canonical = resolve_gpu(name)
    return GPUS.get(canonical) if canonical else None


def vast_name(canonical: str) -> str:
    """The `gpu_name` Vast.ai reports for a model ("RTX 4090", "Tesla T4")."""
    info = GPUS[canonical]
    return info.vast or canonical.replace("_", " ")
