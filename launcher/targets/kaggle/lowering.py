"""Lowering a job's image to what a Kaggle kernel can use, and what Kaggle cannot give it.

Kaggle runs only its own images (reference §1.6), so the image is lowered to its pinned
requirements.txt; the generated kernel installs only what Kaggle's image lacks at a compatible
version. What cannot be lowered is warned about before anything is pushed: a CUDA major version
other than Kaggle's, GPUs Kaggle does not have (its GPUs are 2x T4: 16 GB, compute capability 7.5;
the P100 is retired).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Kaggle's GPU images ship CUDA 12 [3rd-party: Kaggle's docker-python release notes, 2025-26]
KAGGLE_CUDA_MAJOR = 12
# per machine shape: (GPU name, count, GB of memory each, compute capability x10)
SHAPES: dict[str, tuple[str, int, float, int]] = {
    "NvidiaTeslaT4": ("T4", 2, 16.0, 75),
    "NvidiaL4x4": ("L4", 4, 24.0, 89),
    "NvidiaRtxPro6000": ("RTX PRO 6000", 1, 96.0, 120),
    "TpuV5E8": ("TPU v5e", 8, 16.0, 0),
}
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==|~=|>=|<=|>|<|!=)?\s*([^;\s#]*)"
)
_CUDA_FROM = re.compile(r"cuda:(\d+)\.(\d+)")
_CU_WHEEL = re.compile(r"\+cu(\d{2,3})\b|--extra-index-url\s+\S*/cu(\d{2,3})\b")


@dataclass
class Lowered:
    """The image as a kernel sees it: requirement lines to check and install, and warnings."""

    requirements: list[dict[str, str]] = field(default_factory=list[dict[str, str]])
    pip_options: list[str] = field(default_factory=list[str])
    warnings: list[str] = field(default_factory=list[str])


def lower_image(image_dir: Path | None) -> Lowered:
    """Read images/<name>/requirements.txt (and the Dockerfile's CUDA base) into a `Lowered`."""
    out = Lowered()
    if image_dir is None:
        return out
    req = image_dir / "requirements.txt"
    text = req.read_text(encoding="utf-8") if req.is_file() else ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):  # --extra-index-url, --find-links: passed on to pip
            out.pip_options.extend(line.split())
            continue
        m = _PIN.match(line)
        if m is None:
            out.warnings.append(f"{req}: cannot read requirement {line!r}; it is skipped")
            continue
        out.requirements.append(
            {"name": m.group(1), "op": m.group(3) or "", "version": m.group(4), "line": line}
        )
    cuda = _cuda_major(image_dir, text)
    if cuda is not None and cuda != KAGGLE_CUDA_MAJOR:
        out.warnings.append(
            f"the image is built for CUDA {cuda}, Kaggle's GPU images have CUDA "
            f"{KAGGLE_CUDA_MAJOR}: GPU packages pinned for CUDA {cuda} may not load there"
        )
    return out


def _cuda_major(image_dir: Path, requirements: str) -> int | None:
    m = _CU_WHEEL.search(requirements)
    if m is not None:
        digits = m.group(1) or m.group(2)
        return int(digits[:-1])  # cu121 -> 12, cu118 -> 11
    dockerfile = image_dir / "Dockerfile"
    if dockerfile.is_file():
        found = _CUDA_FROM.search(dockerfile.read_text(encoding="utf-8"))
        if found is not None:
            return int(found.group(1))
    return None


def gpu_problems(spec: Any, accelerator: str) -> list[str]:
    """Why the job's GPU needs do not fit the machine shape (empty when they do)."""
    gpu = spec.resources.gpu
    if gpu.count == 0:
        return []
    name, count, mem, _cc = SHAPES[accelerator]
    problems: list[str] = []
    if gpu.count > count:
        problems.append(f"the job asks for {gpu.count} GPUs; {accelerator} has {count}")
    if gpu.min_vram_gb and gpu.min_vram_gb > mem:
        problems.append(
            f"the job needs {gpu.min_vram_gb:g} GB per GPU; {name} on Kaggle has {mem:g} GB"
        )
    wanted: list[Any] = list(gpu.types or [])
    types = [str(t).replace("_", " ").upper() for t in wanted]
    if types and name.upper() not in types:
        if "P100" in types and name == "T4":
            problems.append("the job asks for a P100: Kaggle retired it (T4 runs instead)")
        else:
            problems.append(f"the job asks for {', '.join(types)}; {accelerator} is {name}")
    return problems
