"""What `launch plan --target local` says: which runtime, which GPUs this machine has, and what
would stop the job (GPUs asked for but absent). Nothing is built or started."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from launcher.errors import LaunchError
from launcher.targets.base import Plan, PlanOption


def local_gpus() -> list[tuple[str, float]]:
    """(name, memory GB) of each GPU nvidia-smi lists; [] without nvidia-smi or a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus: list[tuple[str, float]] = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        name, _, mib = line.rpartition(",")
        try:
            gpus.append((name.strip(), round(float(mib) / 1024, 1)))
        except ValueError:
            continue
    return gpus


def plan_local(target: Any, spec: Any) -> Plan:
    """The plan for `target` (a LocalTarget): runtime and GPUs, free of charge."""
    plan = Plan(target="local")
    runtime = target._runtime(spec)  # pyright: ignore[reportPrivateUsage]
    gpus = local_gpus()
    want = spec.resources.gpu.count
    try:
        exposed = target._gpus(spec, runtime)  # pyright: ignore[reportPrivateUsage]
    except LaunchError as e:
        plan.problems.append(e.message + (f" ({e.hint})" if e.hint else ""))
        exposed = 0
    else:
        if want and len(gpus) < want:
            plan.problems.append(f"the job asks for {want} GPU(s); this machine has {len(gpus)}")
    min_vram = spec.resources.gpu.min_vram_gb
    small = [n for n, gb in gpus if min_vram and gb < min_vram]
    if want and small:
        plan.notes.append(f"below min_vram_gb={min_vram}: {', '.join(small)}")
    detail = f"{runtime}" + (f", image {spec.image}" if spec.image and runtime == "docker" else "")
    count = len(gpus) if exposed == "all" else int(exposed or 0)
    plan.options.append(
        PlanOption(
            name="this machine",
            gpu=gpus[0][0] if gpus and count else "",
            gpu_count=min(count, len(gpus)),
            gpu_ram_gb=gpus[0][1] if gpus and count else None,
            price_per_hour=0.0,
            estimated_cost_usd=0.0,
            details={"runtime": detail},
        )
    )
    if runtime == "process" and spec.image:
        from launcher.images import requirements_for

        req = requirements_for(spec, spec.targets.for_target("local").requirements)
        plan.notes.append(f"runs as a process in a virtualenv from images/{spec.image}/{req}")
    return plan
