"""Options of the Vast.ai target: filters on the offers it may rent."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator

from launcher.spec_base import StrictModel, spec_error

_CUDA_RE = re.compile(r"^\d+\.\d+$")


class VastOptions(StrictModel):
    image: Annotated[
        str | None,
        Field(
            min_length=1,
            description="The image reference Vast pulls, e.g. ghcr.io/you/train:1.2 (Vast "
            "pulls from a registry; it cannot see images built on this machine). Default: "
            "the job's `image` as written.",
        ),
    ] = None
    requirements: Annotated[
        str | None,
        Field(
            description="Requirements file of the image folder to build the pushed image "
            "with (the REQUIREMENTS build argument). Default: requirements-cpu.txt for a job "
            "that asks for no GPU when the folder has one, else requirements.txt.",
            pattern=r"^[A-Za-z0-9._-]+\.txt$",
        ),
    ] = None
    max_dph: Annotated[
        float | None,
        Field(gt=0, description="Highest total price to pay, in $/hour (Vast's dph_total)."),
    ] = None
    min_reliability: Annotated[
        float | None,
        Field(ge=0, le=1, description="Lowest host reliability score to accept (0..1)."),
    ] = None
    interruptible: Annotated[
        bool,
        Field(
            description="Rent interruptible (bid) instances: cheaper, but may be stopped when "
            "outbid; the job then resumes from its newest checkpoint."
        ),
    ] = False
    min_inet_down_mbps: Annotated[
        float | None,
        Field(gt=0, description="Lowest download bandwidth of the host, in Mb/s."),
    ] = None
    min_cuda: Annotated[
        str | None,
        Field(
            description='Lowest CUDA version the host driver must support, e.g. "12.1".',
            pattern=r"^\d+\.\d+$",
        ),
    ] = None

    @field_validator("min_cuda", mode="before")
    @classmethod
    def _cuda_text(cls, value: Any) -> Any:
        # YAML reads `min_cuda: 12.1` as a float; accept it as the version it plainly means.
        if isinstance(value, float):
            value = repr(value)
        if value is not None and not (isinstance(value, str) and _CUDA_RE.match(value)):
            raise spec_error(f'expected a CUDA version like "12.1", got {value!r}')
        return value
