"""Which requirements file of an image folder a job installs: a run that asks for no GPU takes
the folder's CPU twin when it ships one (a CPU smoke run must not build the CUDA image)."""

from __future__ import annotations

import pytest

from launcher.images import requirements_for
from launcher.spec import load_spec
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("job", "profile", "chosen", "expected"),
    [
        ("violence", "smoke", None, "requirements-cpu.txt"),  # no GPU, the folder has a twin
        ("violence", None, None, "requirements.txt"),  # a GPU job
        ("violence", "smoke", "requirements.txt", "requirements.txt"),  # told otherwise
        ("libcem", "smoke", None, "requirements.txt"),  # no twin: its torch pin is CPU here
        ("deepfake-train", "smoke", None, "requirements-cpu.txt"),
    ],
)
def test_requirements_for(job: str, profile: str | None, chosen: str | None, expected: str) -> None:
    spec = load_spec(REPO / "jobs" / f"{job}.yaml", profile=profile)
    assert requirements_for(spec, chosen) == expected


def test_the_vast_option_leaves_it_to_the_job_by_default() -> None:
    spec = load_spec(REPO / "jobs" / "violence.yaml", profile="smoke")
    assert spec.targets.for_target("vast").requirements is None
