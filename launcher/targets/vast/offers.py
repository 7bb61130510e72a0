"""From a job spec to the offer search `POST /bundles/` understands, and back to a choice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.gpus import vast_name
from launcher.lowering import cuda_needed
from launcher.targets.vast.options import VastOptions

if TYPE_CHECKING:
    from launcher.spec import JobSpec

# `vastai search offers` takes GB; the API wants MB, and the CLI multiplies by 1000 (not 1024).
_MB_PER_GB = 1000


def offer_query(spec: JobSpec, opts: VastOptions, *, limit: int = 20) -> dict[str, Any]:
    """The search body for this job: every hard need as a filter, cheapest first. Without
    targets.vast.min_cuda, a GPU job's image says which CUDA the host driver must run.

    A job with `gpu.count: 0` filters on no GPU at all: Vast rents whole GPU machines, so a CPU
    job simply gets the cheapest one that fits the rest.
    """
    res = spec.resources
    disk = float(res.disk_gb)
    q: dict[str, Any] = {
        "rentable": {"eq": True},
        "disk_space": {"gte": disk},
        "order": [["dph_total", "asc"]],
        "type": "bid" if opts.interruptible else "on-demand",
        "allocated_storage": disk,  # dph_total then includes this much storage
        "limit": limit,
    }
    gpu = res.gpu
    if gpu.count:
        q["num_gpus"] = {"eq": gpu.count}
    if gpu.types:
        q["gpu_name"] = {"in": [vast_name(t) for t in gpu.types]}
    if gpu.min_vram_gb:
        q["gpu_ram"] = {"gte": gpu.min_vram_gb * _MB_PER_GB}
    if res.cpus:
        q["cpu_cores_effective"] = {"gte": res.cpus}
    if res.memory_gb:
        q["cpu_ram"] = {"gte": res.memory_gb * _MB_PER_GB}
    cuda = float(opts.min_cuda) if opts.min_cuda else None
    if cuda is None and gpu.count and opts.image is None:
        # the image's base or its framework pins (PyPI's torch 2.13 bundles CUDA 13) decide
        # which host drivers can run it
        need = cuda_needed(spec.image_dir)
        cuda = float(need) if need is not None else None
    if cuda is not None:
        q["cuda_max_good"] = {"gte": cuda}
    if opts.min_reliability is not None:
        q["reliability"] = {"gte": opts.min_reliability}
    if opts.max_dph is not None:
        q["dph_total"] = {"lte": opts.max_dph}
    if opts.min_inet_down_mbps is not None:
        q["inet_down"] = {"gte": opts.min_inet_down_mbps}
    return q


def bid_price(offer: dict[str, Any], opts: VastOptions) -> float | None:
    """What to bid for an interruptible offer: its floor, a little over (None = on-demand)."""
    if not opts.interruptible:
        return None
    floor = float(offer.get("min_bid") or offer.get("dph_base") or 0)
    return round(floor * 1.05 + 1e-4, 4)


def describe(offer: dict[str, Any]) -> str:
    n, gpu = offer.get("num_gpus"), offer.get("gpu_name")
    where = offer.get("geolocation") or "?"
    dph = float(offer.get("dph_total") or 0)
    return f"offer {offer.get('id')}: {n}x {gpu}, ${dph:.3f}/h, {where}"


def reliability(offer: dict[str, Any]) -> float:
    """The host's reliability score (0..1); Vast sends it as `reliability2` or `reliability`."""
    value = offer.get("reliability2", offer.get("reliability"))
    return float(value) if isinstance(value, int | float) else 0.0


def price(offer: dict[str, Any], opts: VastOptions) -> float:
    """What renting `offer` costs per hour, storage included: its dph_total, or for an
    interruptible rental our bid (5% over the floor the search priced it at)."""
    dph = float(offer.get("dph_total") or 0)
    bid = bid_price(offer, opts)
    if bid is not None:
        dph += bid - float(offer.get("min_bid") or offer.get("dph_base") or 0)
    return dph


def rank(offers: list[dict[str, Any]], opts: VastOptions) -> list[dict[str, Any]]:
    """Best first: the lowest $/h per unit of reliability, i.e. the expected price of an hour
    that is not lost to a failing host. A 0.95 host must be 5% cheaper to beat a 1.0 one."""

    def key(o: dict[str, Any]) -> tuple[float, float, int]:
        return (price(o, opts) / max(reliability(o), 0.01), -reliability(o), int(o.get("id") or 0))

    return sorted(offers, key=key)


# The search filter -> the spec field a user changes to relax it (for "nothing fits" problems).
FILTER_FIELDS: dict[str, str] = {
    "num_gpus": "resources.gpu.count",
    "gpu_name": "resources.gpu.types",
    "gpu_ram": "resources.gpu.min_vram_gb",
    "cpu_cores_effective": "resources.cpus",
    "cpu_ram": "resources.memory_gb",
    "disk_space": "resources.disk_gb",
    "cuda_max_good": "targets.vast.min_cuda",
    "reliability": "targets.vast.min_reliability",
    "dph_total": "targets.vast.max_dph",
    "inet_down": "targets.vast.min_inet_down_mbps",
}
