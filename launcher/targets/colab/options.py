"""Options of the Colab target (a generated notebook, run through Google Drive)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from launcher.spec_base import StrictModel


class ColabOptions(StrictModel):
    gpu: Annotated[
        Literal["T4", "L4", "A100", "H100"],
        Field(description="Colab GPU runtime to ask for (free tier: usually T4 only)."),
    ] = "T4"
