"""Which requirements file of an image folder a job installs: a run that asks for no GPU takes
the folder's CPU twin when it ships one (a CPU smoke run must not build the CUDA image)."""

from __future__ import annotations

from pathlib import Path

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


def test_notebook_platforms_lower_the_cpu_twin_for_a_job_without_a_gpu(tmp_path: Path) -> None:
    """Kaggle and Colab install what the image folder lists: for a CPU smoke run of violence
    that is tensorflow-cpu, not the CUDA wheels of requirements.txt."""
    from launcher.lowering import lower_job

    spec = load_spec(REPO / "jobs" / "violence.yaml", profile="smoke")
    for platform in ("kaggle", "colab"):
        opts = spec.targets.for_target(platform)
        assert opts.requirements is None
        names = [r["name"] for r in lower_job(spec, platform, None, tmp_path, print).requirements]
        assert "tensorflow-cpu" in names and "tensorflow" not in names, names


def test_long_builds_and_pushes_say_how_far_they_are() -> None:
    from launcher.images import build_steps
    from launcher.registry import _layers_pushed  # pyright: ignore[reportPrivateUsage]

    said: list[str] = []
    on_build = build_steps(said.append)
    for line in ("Step 1/3 : FROM base", " ---> 1234", "Step 2/3 : RUN pip install x"):
        on_build(line)
    assert said == ["build Step 1/3 : FROM base", "build Step 2/3 : RUN pip install x"]
    said.clear()
    on_push = _layers_pushed(said.append)
    for status in ("Preparing", "Preparing", "Pushing", "Layer already exists", "Pushed"):
        on_push(status)
    assert said == ["push: 1 of 2 layers (1 already there)", "push: 2 of 2 layers (1 already there)"]
