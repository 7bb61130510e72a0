"""Options of the local target (this machine: docker, or a plain process)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from launcher.spec_base import StrictModel, spec_error


class LocalOptions(StrictModel):
    runtime: Annotated[
        Literal["auto", "docker", "process"],
        Field(
            description="How to run the job: `docker` runs the job's image, `process` runs the "
            "workload in a virtualenv built from the image's requirements.txt, `auto` uses docker "
            "when the engine answers and the job has an image."
        ),
    ] = "auto"
    gpus: Annotated[
        Literal["requested", "all", "none"] | Annotated[int, Field(ge=0)],
        Field(
            description="GPUs to expose: `requested` (resources.gpu.count of them), `all` of "
            "this machine's, `none`, or a number."
        ),
    ] = "requested"

    requirements: Annotated[
        str | None,
        Field(
            description="Requirements file of the image folder to install: the process "
            "runtime builds its virtualenv from it, the docker runtime passes it as the "
            "REQUIREMENTS build argument. Default: requirements-cpu.txt for a job that asks "
            "for no GPU when the folder has one, else requirements.txt.",
            pattern=r"^[A-Za-z0-9._-]+\.txt$",
        ),
    ] = None

    @field_validator("gpus", mode="before")
    @classmethod
    def _check_gpus(cls, value: Any) -> Any:
        ok = value in ("requested", "all", "none") or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        )
        if not ok:
            raise spec_error(f"expected requested, all, none or a number of GPUs, got {value!r}")
        return value
