"""Options of the Kaggle target (a kernel run on Kaggle's own images)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from launcher.spec_base import StrictModel

# Kaggle machine shapes (kernel-metadata `machine_shape`, CLI `--accelerator`). NvidiaTeslaP100
# is retired: the server silently runs it on T4, so we do not accept it.
KaggleAccelerator = Literal["NvidiaTeslaT4", "NvidiaL4x4", "NvidiaRtxPro6000", "TpuV5E8"]


class KaggleOptions(StrictModel):
    accelerator: Annotated[
        KaggleAccelerator,
        Field(
            description="Kaggle machine shape: NvidiaTeslaT4 (2x T4 16 GB, the default GPU), "
            "TpuV5E8, NvidiaL4x4 (some competitions only), NvidiaRtxPro6000 (where offered)."
        ),
    ] = "NvidiaTeslaT4"
    internet: Annotated[
        bool,
        Field(description="Give the kernel internet access (needs a phone-verified account)."),
    ] = True
    allow_chaining: Annotated[
        bool,
        Field(
            description="When a run outlives Kaggle's session cap (~12 h), start another session "
            "that resumes from the newest checkpoint."
        ),
    ] = True
    session_hours: Annotated[
        float,
        Field(
            gt=0,
            le=12,
            description="Hours one Kaggle session may run (Kaggle's cap is about 12 h). The job "
            "checkpoints before it; a shorter value splits the run into more chained sessions.",
        ),
    ] = 12
    requirements: Annotated[
        str | None,
        Field(
            description="Requirements file the kernel installs (Kaggle cannot run the image "
            "itself): a file of the image folder (e.g. requirements-kaggle.txt, pinned for "
            "Kaggle's CUDA 12 driver or to Kaggle's own PyTorch), or for a registry image a "
            "path from the project root (default: what the image has installed, read with "
            "`pip freeze` in it).",
            # None: requirements-cpu.txt for a job without a GPU when the folder has one
            pattern=r"^[A-Za-z0-9._/-]+\.txt$",
        ),
    ] = None
    max_sessions: Annotated[
        int,
        Field(ge=1, le=100, description="Chained sessions one run may use at most."),
    ] = 10
