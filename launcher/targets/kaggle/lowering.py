"""What Kaggle's machines are, and what a job asks that they cannot give: GPUs Kaggle does not
have (its GPUs are 2x T4: 16 GB, compute capability 7.5; the P100 is retired). Lowering the image
to its requirements is shared with the other notebook platforms (launcher/lowering.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.spec import JobSpec

# per machine shape: (GPU name, count, GB of memory each, compute capability x10)
SHAPES: dict[str, tuple[str, int, float, int]] = {
    "NvidiaTeslaT4": ("T4", 2, 16.0, 75),
    "NvidiaL4x4": ("L4", 4, 24.0, 89),
    "NvidiaRtxPro6000": ("RTX PRO 6000", 1, 96.0, 120),
    "TpuV5E8": ("TPU v5e", 8, 16.0, 0),
}


def gpu_problems(spec: JobSpec, accelerator: str) -> list[str]:
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
