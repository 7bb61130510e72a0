"""`prepare` for the Vast target (local work only: check the spec, bundle, unpack) and the first
handle `submit` rents with."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.errors import TargetUnavailableError
from launcher.targets.base import Prepared
from launcher.targets.jobfiles import agent_config, job_bundle, local_inputs
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.workspace import VastHandle, unpacked_bundle


def prepare_vast(spec: Any, run_id: str, home: Path, notify: Callable[[str], None]) -> Prepared:
    opts: VastOptions = spec.targets.for_target("vast")
    image = opts.image or spec.image
    if not image:
        raise TargetUnavailableError(
            "the vast target runs an image, and this job names none",
            hint="set `image:` or `targets.vast.image: <registry image>`",
        )
    missing = [s for s in spec.secrets if s not in os.environ]
    if missing:
        raise TargetUnavailableError(
            f"secret(s) not set in this shell: {', '.join(missing)}",
            hint="export them before `launch run`; their values never enter the bundle",
        )
    bundle = job_bundle(spec, home, notify)
    return Prepared(
        run_id=run_id,
        bundle_path=bundle.path,
        bundle_digest=bundle.digest,
        image=image,
        secrets=list(spec.secrets),
        data={
            "agent": agent_config(spec),
            "query": offers_mod.offer_query(spec, opts),
            "options": opts.model_dump(),
            "disk_gb": float(spec.resources.disk_gb),
            "inputs": local_inputs(spec, "vast"),
            # unpacked now (local work), pushed file by file once the instance answers
            "bundle_dir": str(unpacked_bundle(bundle.path, bundle.digest)),
        },
    )


def first_handle(prepared: Prepared, label_prefix: str) -> VastHandle:
    d = prepared.data
    return VastHandle(
        instance_id=0,
        offer_id=0,
        label=f"{label_prefix}{prepared.run_id}",
        dph_total=0.0,
        bundle_path=str(prepared.bundle_path),
        bundle_digest=prepared.bundle_digest,
        agent=dict(d["agent"], run_id=prepared.run_id),
        secrets=prepared.secrets,
        resume_from=str(prepared.resume_checkpoints) if prepared.resume_checkpoints else None,
        image=str(prepared.image),
        disk_gb=float(d["disk_gb"]),
        options=d["options"],
        query=d["query"],
        inputs=d.get("inputs") or {},
        bundle_dir=str(d.get("bundle_dir") or ""),
    )
