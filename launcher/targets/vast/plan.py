"""What `launch plan --target vast` says: the live offers that fit, best first, what each would
cost for the job's time limit, and, when none fits, which filter stands in the way.

Only the read-only search endpoint is called: nothing is rented, nothing is spent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from launcher import registry
from launcher.targets.base import Plan, PlanOption
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.client import VastClient
from launcher.targets.vast.options import VastOptions

if TYPE_CHECKING:
    from launcher.spec import JobSpec

PLAN_LIMIT = 200  # offers fetched for one plan: enough to rank, small enough to be quick


def image_problem(spec: JobSpec, opts: VastOptions) -> str | None:
    """Why an instance could not get the job's image (None when it can): Vast pulls images
    from a registry, so an image folder built here needs one to be pushed to."""
    if not (opts.image or spec.image):
        return (
            "the vast target runs an image, and this job names none "
            "(set `image:` or `targets.vast.image`)"
        )
    if opts.image is None and spec.image_dir is not None and registry.configured() is None:
        return (
            f"the vast target pulls the job's image from a registry, and images/{spec.image} "
            f"is built on this machine: {registry.REGISTRY_HINT}; or set targets.vast.image to "
            "a registry image"
        )
    return None


def plan_vast(client: VastClient, spec: JobSpec) -> Plan:
    opts: VastOptions = spec.targets.for_target("vast")
    plan = Plan(target="vast")
    image = image_problem(spec, opts)
    if image is not None:
        plan.problems.append(image)
    elif spec.image_dir is not None and opts.image is None:
        plan.notes.append(
            f"images/{spec.image} is built here and pushed to {registry.configured()} "
            "(once per content) for the instance to pull"
        )
    missing = [s for s in spec.secrets if s not in os.environ]
    if missing:
        plan.problems.append(f"secret(s) not set in this shell: {', '.join(missing)}")
    query = offers_mod.offer_query(spec, opts, limit=PLAN_LIMIT)
    found = offers_mod.rank(client.search_offers(query), opts)
    hours = spec.limits.max_hours
    for offer in found:
        dph = offers_mod.price(offer, opts)
        plan.options.append(
            PlanOption(
                name=str(offer.get("id")),  # the offer id `vastai` shows too
                gpu=str(offer.get("gpu_name") or ""),
                gpu_count=int(offer.get("num_gpus") or 0),
                gpu_ram_gb=round(float(offer.get("gpu_ram") or 0) / 1000, 1) or None,
                price_per_hour=dph,
                estimated_cost_usd=round(dph * hours, 4) if hours else None,
                details={  # short: the table must fit 80 columns
                    "rel": f"{offers_mod.reliability(offer):.3f}",
                    "cuda": str(offer.get("cuda_max_good") or "?"),
                    "mbps": f"{float(offer.get('inet_down') or 0):g}",
                    "where": str(offer.get("geolocation") or "?").rsplit(",", 1)[-1].strip(),
                },
            )
        )
    if not found:
        plan.problems.append(_why_nothing_fits(client, query))
    _cost_notes(plan, spec, opts)
    return plan


def _cost_notes(plan: Plan, spec: JobSpec, opts: VastOptions) -> None:
    hours, cap = spec.limits.max_hours, spec.limits.max_cost_usd
    if opts.interruptible:
        plan.notes.append(
            "interruptible: prices are our bids, 5% over each floor; an outbid instance is "
            "replaced and the job resumes from its newest checkpoint"
        )
    if not hours:
        plan.notes.append("set limits.max_hours for a cost estimate (cost = $/h x hours)")
    if cap is not None and plan.options:
        best = plan.options[0].price_per_hour or 0.0
        if best > 0:
            runs_for = cap / best
            if hours is None or runs_for < hours:
                plan.notes.append(
                    f"limits.max_cost_usd=${cap:g} buys {runs_for:.2f} h of the first option: "
                    "the job is stopped (with a checkpoint) before it costs more"
                )


def _why_nothing_fits(client: VastClient, query: dict[str, Any]) -> str:
    """Which filter alone excludes the most offers of those rentable now (one search each)."""
    base = {k: v for k, v in query.items() if k not in offers_mod.FILTER_FIELDS}
    universe = len(client.search_offers(base))
    if universe == 0:
        return "no Vast offer of this type (on-demand/interruptible) is rentable right now"
    excluded: list[tuple[int, str]] = []
    for key in offers_mod.FILTER_FIELDS:
        if key in query:
            kept = len(client.search_offers({**base, key: query[key]}))
            excluded.append((universe - kept, key))
    excluded.sort(reverse=True)
    worst, key = excluded[0] if excluded else (0, "")
    text = f"no Vast offer fits this job ({universe} rentable now)"
    if worst:
        text += (
            f"; {offers_mod.FILTER_FIELDS[key]} ({key} {query[key]}) alone excludes "
            f"{worst} of them"
        )
        others = [f"{offers_mod.FILTER_FIELDS[k]} {n}" for n, k in excluded[1:] if n and k != key]
        if others:
            text += f" (then {', '.join(others[:3])})"
    else:
        text += "; no single filter excludes them all: relax several"
    return text
