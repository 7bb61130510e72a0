"""`prepare` for the Vast target: local work only (check the spec, bundle, unpack)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.errors import TargetUnavailableError
from launcher.targets.jobfiles import agent_config, job_bundle, local_inputs
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.workspace import VastPrepared, unpacked_bundle

if TYPE_CHECKING:
    from launcher.spec import JobSpec


def prepare_vast(
    spec: JobSpec, run_id: str, home: Path, notify: Callable[[str], None]
) -> VastPrepared:
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
    return VastPrepared(
        run_id=run_id,
        bundle_path=bundle.path,
        bundle_digest=bundle.digest,
        agent=agent_config(spec),
        secrets=list(spec.secrets),
        more_attempts_hint="limits.max_attempts allows more moves to another machine",
        image=image,
        query=offers_mod.offer_query(spec, opts),
        options=opts,
        disk_gb=float(spec.resources.disk_gb),
        inputs=local_inputs(spec, "vast"),
        # unpacked now (local work), pushed file by file once the instance answers
        bundle_dir=str(unpacked_bundle(bundle.path, bundle.digest)),
    )
