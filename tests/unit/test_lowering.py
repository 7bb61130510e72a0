"""What an image needs from a platform's driver, and what lowering it to a notebook platform's
requirements finds (launcher/lowering.py): the repo's real images and small made-up ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.lowering import (
    STACKS,
    Pin,
    cuda_needed,
    framework_cuda,
    lower,
    read_requirements,
    satisfied,
)
from launcher.spec import load_spec
from launcher.targets.vast.offers import offer_query
from tests.conftest import REPO


def pin(line: str, tmp_path: Path) -> Pin:
    """The line read as a requirements file is read."""
    req = tmp_path / "requirements.txt"
    req.write_text(line + "\n")
    [found], _options, _warnings = read_requirements(req)
    return found


@pytest.mark.parametrize(
    ("line", "options", "cuda"),
    [
        ("torch==2.13.0", [], 13),  # PyPI's default build bundles CUDA 13
        ("torch==2.5.1", [], 12),
        ("torch==2.13.0+cu126", [], 12),
        ("torch==2.13.0", ["--extra-index-url", "https://download.pytorch.org/whl/cu126"], 12),
        ("torch==2.13.0+cpu", [], None),
        ("torch", [], None),  # whatever pip picks: unknown
        ("tensorflow[and-cuda]==2.21.0", [], 12),
        ("tensorflow==2.21.0", [], None),
        ("numpy==2.2.6", [], None),
    ],
)
def test_the_cuda_a_framework_pin_brings(
    line: str, options: list[str], cuda: int | None, tmp_path: Path
) -> None:
    assert framework_cuda(pin(line, tmp_path), options) == cuda


def test_a_pin_is_satisfied_the_way_the_kernel_decides() -> None:
    assert satisfied("2.6.0", ">=", "2.6") and not satisfied("2.6.0", "==", "2.13.0")
    assert satisfied("2.13.1+cu126", "==", "2.13.0")  # the same feature release


def test_the_repos_images_say_which_host_drivers_can_run_them() -> None:
    images = REPO / "images"
    assert cuda_needed(images / "libcem") == 13  # a CUDA 12.4 base, but torch 2.13's own CUDA
    assert cuda_needed(images / "violence") == 12
    libcem = load_spec(REPO / "jobs" / "libcem.yaml")
    assert offer_query(libcem, libcem.targets.for_target("vast"))["cuda_max_good"] == {"gte": 13.0}
    hello = load_spec(REPO / "jobs" / "hello.yaml")  # a CPU job: any host
    assert "cuda_max_good" not in offer_query(hello, hello.targets.for_target("vast"))


def test_on_a_cpu_job_a_cuda_mismatch_is_a_warning_not_a_refusal() -> None:
    req = REPO / "images" / "libcem" / "requirements.txt"
    gpu = lower(req, STACKS["colab"], gpu=True)
    cpu = lower(req, STACKS["colab"], gpu=False)
    assert len(gpu.problems) == 1 and "Colab" in gpu.problems[0][0]
    assert cpu.problems == [] and any("a CPU job: it still runs" in w for w in cpu.warnings)
    kept = lower(req.with_name("requirements-kaggle.txt"), STACKS["kaggle"], gpu=True)
    assert kept.problems == [] and any("Kaggle's own torch" in n for n in kept.notes)


def test_a_cpu_build_name_stands_for_the_platform_s_own_package() -> None:
    """`tensorflow-cpu` asked where `tensorflow` is installed (Kaggle, Colab): kept when its
    version fits, else the installed name is upgraded; never both in one folder."""
    import types

    from launcher.targets.bootstrap import INSTALL_SOURCE

    said: list[str] = []
    ran: list[list[str]] = []

    class Proc:
        stdout: list[str] = []

        def __init__(self, cmd: list[str], **_kw: object) -> None:
            ran.append(cmd)

        def wait(self) -> int:
            return 0

    ns: dict[str, object] = {
        "CONFIG": {"pip_options": []},
        "say": said.append,
        "fail": lambda code, msg: said.append(f"fail {code} {msg}"),
        "sys": types.SimpleNamespace(executable="python3"),
        "subprocess": types.SimpleNamespace(Popen=Proc, PIPE=-1, STDOUT=-2),
    }
    exec(INSTALL_SOURCE, ns)  # noqa: S102 - the generated kernel's own source, as it runs there
    req = {"name": "tensorflow-cpu", "op": "==", "version": "2.21.0",
           "line": "tensorflow-cpu==2.21.0"}  # fmt: skip
    ns["CONFIG"] = {"pip_options": [], "requirements": [req]}
    for have, expect_install in (("2.21.0", None), ("2.18.0", "tensorflow==2.21.0")):
        said.clear()
        ran.clear()
        ns["installed"] = {"tensorflow": have}.get
        ns["install_requirements"]()  # type: ignore[operator]
        if expect_install is None:
            assert said == ["keeping tensorflow 2.21.0 (asked tensorflow-cpu==2.21.0)"], said
            assert ran == []
        else:
            assert ran and ran[0][-1] == expect_install, ran
            assert "tensorflow-cpu==2.21.0" not in ran[0]
