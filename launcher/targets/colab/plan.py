"""What Colab gives, what a job asks that it cannot, and `launch plan --target colab`.

Colab runs one GPU per runtime, of the type the notebook asks for when the account may have it
(free tier: usually a T4). Its sessions end at a cap (12 h free, up to 24 h with Pro+) or when
the tab is closed or idle, and start only when the user opens the notebook: one click per session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import TargetUnavailableError
from launcher.lowering import Lowered, lower_job
from launcher.targets.base import Plan, PlanOption
from launcher.targets.colab.options import ColabOptions

if TYPE_CHECKING:
    from launcher.spec import JobSpec

# GPU -> GB of memory (what Colab's runtimes show); price: the free tier's T4 costs nothing,
# the others take compute units on a paid plan (about $0.10 each; the rate varies) [3rd-party]
GPU_MEMORY_GB: dict[str, float] = {"T4": 15.0, "L4": 22.5, "A100": 40.0, "H100": 80.0}
FREE_GPUS = frozenset({"T4"})


def gpu_problems(spec: JobSpec, gpu: str) -> list[str]:
    """Why the job's GPU needs do not fit Colab's runtime (empty when they do)."""
    want = spec.resources.gpu
    if want.count == 0:
        return []
    problems: list[str] = []
    if want.count > 1:
        problems.append(f"the job asks for {want.count} GPUs; a Colab runtime has one")
    mem = GPU_MEMORY_GB[gpu]
    if want.min_vram_gb and want.min_vram_gb > mem:
        problems.append(
            f"the job needs {want.min_vram_gb:g} GB per GPU; Colab's {gpu} has {mem:g}"
        )
    wanted: list[Any] = list(want.types or [])
    types = [str(t).replace("_", " ").upper() for t in wanted]
    if types and gpu.upper() not in types:
        problems.append(f"the job asks for {', '.join(types)}; targets.colab.gpu is {gpu}")
    return problems


def lowered_for_colab(
    spec: JobSpec, opts: ColabOptions, home: Path, notify: Callable[[str], None]
) -> Lowered:
    return lower_job(spec, "colab", opts.requirements, home, notify)


def check_job(
    spec: JobSpec, opts: ColabOptions, home: Path, notify: Callable[[str], None]
) -> Lowered:
    """Refuse what cannot run on Colab (with its fix), warn about the rest; the lowered image."""
    lowered = lowered_for_colab(spec, opts, home, notify)
    if lowered.problems:
        what, fix = lowered.problems[0]
        raise TargetUnavailableError(what, hint=fix)
    for warning in lowered.warnings:
        notify(f"warning: {warning}")
    for problem in gpu_problems(spec, opts.gpu):
        notify(f"warning: Colab cannot give what the job asks: {problem}")
    if spec.secrets:
        explain_secrets(home, list(spec.secrets), notify)
    return lowered


def explain_secrets(home: Path, secrets: list[str], notify: Callable[[str], None]) -> None:
    """Once per set of names: Colab keeps secrets itself, the launcher never sends them."""
    key = hashlib.sha256(" ".join(sorted(secrets)).encode()).hexdigest()[:16]
    mark = home / "colab" / f"secrets-explained-{key}"
    if mark.exists():
        return
    notify(
        f"this job reads the secret(s) {', '.join(secrets)} in Colab, from Colab's own store "
        "(launch never uploads secret values): in Colab open Secrets (the key icon on the "
        "left), add each name with its value and turn on notebook access"
    )
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()


def make_plan(
    spec: JobSpec, opts: ColabOptions, home: Path, notify: Callable[[str], None]
) -> Plan:
    gpu = opts.gpu if spec.resources.gpu.count > 0 else ""
    price = 0.0 if not gpu or gpu in FREE_GPUS else None
    hours = spec.limits.max_hours
    option = PlanOption(
        name="a Colab notebook you open",
        gpu=gpu,
        gpu_count=1 if gpu else 0,
        gpu_ram_gb=GPU_MEMORY_GB.get(gpu),
        price_per_hour=price,
        estimated_cost_usd=price * hours if price is not None and hours else None,
        details={"session cap": f"{opts.session_hours:g} h", "start": "one click a session"},
    )
    plan = Plan(target="colab", options=[option])
    plan.notes.append(
        "Colab has no API to start a notebook: `launch run` puts it in your Drive and prints its "
        "link; open it and choose Runtime -> Run all (one click a session)"
    )
    plan.notes.append(
        f"a session ends at {opts.session_hours:g} h, or when the tab is closed or idle; the "
        f"next one goes on from the newest checkpoint (up to {opts.max_sessions} sessions)"
    )
    if gpu and price is None:
        plan.notes.append(f"a {gpu} runtime needs a paid Colab plan (compute units)")
    elif gpu:
        plan.notes.append("the free tier gives a T4 when one is free; none is guaranteed")
    plan.problems += [f"{what} (fix: {fix})" for what, fix in _lowering_problems(spec, opts, home)]
    plan.notes += [
        f"Colab cannot give what the job asks: {p}" for p in gpu_problems(spec, opts.gpu)
    ]
    return plan


def _lowering_problems(spec: JobSpec, opts: ColabOptions, home: Path) -> list[tuple[str, str]]:
    try:
        return lowered_for_colab(spec, opts, home, lambda _m: None).problems
    except TargetUnavailableError as e:
        return [(e.message, e.hint or "")]
