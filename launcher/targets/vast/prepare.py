"""`prepare` for the Vast target: local work only (check the spec, bundle, unpack)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from launcher import registry
from launcher.errors import LaunchError, TargetUnavailableError
from launcher.targets.jobfiles import agent_config, job_bundle, job_inputs
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.plan import image_problem
from launcher.targets.vast.workspace import VastPrepared, unpacked_bundle

if TYPE_CHECKING:
    from launcher.image_config import ImageConfig
    from launcher.spec import JobSpec


def prepare_vast(
    spec: JobSpec, run_id: str, home: Path, notify: Callable[[str], None]
) -> VastPrepared:
    opts: VastOptions = spec.targets.for_target("vast")
    problem = image_problem(spec, opts)
    if problem is not None:
        raise TargetUnavailableError(problem)
    missing = [s for s in spec.secrets if s not in os.environ]
    if missing:
        raise TargetUnavailableError(
            f"secret(s) not set in this shell: {', '.join(missing)}",
            hint="export them before `launch run`; their values never enter the bundle",
        )
    from launcher.targets.vast.target import VastTarget

    inputs = job_inputs(spec, VastTarget, notify)
    image = opts.image or spec.image_ref or _published(spec, opts, home, notify)
    bundle = job_bundle(spec, home, notify)
    agent = agent_config(spec, inputs)
    agent.image_env = _image_env(image, notify)
    return VastPrepared(
        run_id=run_id,
        bundle_path=bundle.path,
        bundle_digest=bundle.digest,
        agent=agent,
        secrets=list(spec.secrets),
        more_attempts_hint="limits.max_attempts allows more moves to another machine",
        image=image,
        query=offers_mod.offer_query(spec, opts),
        options=opts,
        disk_gb=float(spec.resources.disk_gb),
        inputs=inputs.local,
        # unpacked now (local work), pushed file by file once the instance answers
        bundle_dir=str(unpacked_bundle(bundle.path, bundle.digest)),
    )


def _image_env(image: str, notify: Callable[[str], None]) -> dict[str, str]:
    """The image's ENV: Vast starts the job over SSH, whose sessions do not inherit it."""
    from launcher.image_config import image_config

    try:
        return image_config(image, notify, local=_engine_config).env
    except LaunchError as e:  # a missing environment is a warning: the job may not need it
        notify(
            f"warning: could not read the environment of {image} ({e.message}); the job "
            "starts with the instance's login environment (PATH=/usr/local/bin:/usr/bin:/bin)"
        )
        return {}


def _engine_config(ref: str) -> ImageConfig | None:
    """`ref`'s config from this machine's docker engine, when it answers and has the image."""
    try:  # the docker SDK comes with launch[docker], not launch[vast]: then ask the registry
        from launcher.targets.local.docker_client import DockerClient
    except ImportError:
        return None
    if not DockerClient.engine_answers():
        return None
    docker = DockerClient()
    try:
        return docker.image_config(ref)
    finally:
        docker.close()


def _published(
    spec: JobSpec, opts: VastOptions, home: Path, notify: Callable[[str], None]
) -> str:
    """Build the job's image folder here and push it to $LAUNCH_REGISTRY (once per content);
    the reference the instance pulls."""
    from launcher.images import DEFAULT_REQUIREMENTS, build_steps, ensure_image, requirements_for
    from launcher.targets.local.docker_client import DockerClient

    reg = registry.configured()
    assert reg is not None and spec.image is not None  # image_problem said so
    if not DockerClient.engine_answers():
        raise TargetUnavailableError(
            f"images/{spec.image} must be built here to be pushed to {reg}, and no docker "
            "engine answers",
            hint="start docker, or set targets.vast.image to an image already in a registry",
        )
    docker = DockerClient()
    requirements = requirements_for(spec, opts.requirements)
    if requirements != DEFAULT_REQUIREMENTS:
        notify(f"images/{spec.image}: building with {requirements}")
    ref = ensure_image(
        docker,
        spec.project_root,
        spec.image,
        requirements=requirements,
        on_line=build_steps(notify),
        on_build=lambda tag: notify(f"building image {tag}"),
    )
    return registry.publish(docker, ref.tag, reg, home, notify)
