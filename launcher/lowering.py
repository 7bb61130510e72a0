"""Lowering an image to what a notebook platform can use, and what CUDA an image needs.

Kaggle and Colab run only their own images, so a job's image is lowered to its pinned
requirements file; the generated kernel or notebook installs only what the platform's Python
lacks at a compatible version (its preinstalled PyTorch or TensorFlow is kept when the pin allows
it). What cannot work is found here, before anything is pushed or rented:

- a framework pin whose wheel brings a CUDA the platform's driver cannot run: PyPI's default
  torch 2.13 wheel bundles CUDA 13 and needs an NVIDIA driver >= 580; a CUDA 12 driver (Kaggle's,
  Colab's) runs it on the CPU at best, after a 2 GB download. With a GPU asked for, that is a
  problem with the fix; without one, a warning;
- an image built on a CUDA base the platform's frameworks do not match (a warning).

The platforms' software is a dated table (`STACKS`): what their GPU images shipped when it was
last checked. The kernel checks the real versions at run time; the table only lets `launch plan`
and `launch run` say no before a push. Images that run as images (local docker, Vast) use
`cuda_needed`: the newest CUDA an image's base or framework pins need from the host's driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from launcher.errors import TargetUnavailableError
from launcher.sync import atomic_write_text

if TYPE_CHECKING:
    from launcher.spec import JobSpec


class Pin(BaseModel):
    """One requirement line: `torch==2.13.0`, `tensorflow[and-cuda]==2.21.0`, `wheel>=0.30`."""

    name: str
    op: str = ""  # "==", ">=", ... or "" for any version
    version: str = ""
    extras: str = ""  # "and-cuda" of tensorflow[and-cuda]
    line: str

    def kernel_json(self) -> dict[str, str]:
        """What the generated kernel reads (kernel.py `install_requirements`)."""
        return {"name": self.name, "op": self.op, "version": self.version, "line": self.line}


@dataclass(frozen=True)
class Stack:
    """What a notebook platform's GPU machines run, as last checked (`as_of`)."""

    platform: str
    as_of: str
    driver_cuda: int  # the newest CUDA major version its NVIDIA driver runs
    preinstalled: dict[str, str]  # framework -> version shipped in its image
    source: str


# NOTE: dated facts from outside this repository; re-check them when a platform updates.
STACKS: dict[str, Stack] = {
    "kaggle": Stack(
        platform="Kaggle",
        as_of="2025-12",
        driver_cuda=12,
        preinstalled={"torch": "2.6.0", "tensorflow": "2.18.0", "jax": "0.5.2"},
        source="Kaggle's docker-python GPU image release notes [3rd-party]",
    ),
    "colab": Stack(
        platform="Colab",
        as_of="2025-12",
        driver_cuda=12,
        preinstalled={"torch": "2.8.0", "tensorflow": "2.19.0", "jax": "0.5.3"},
        source="Colab's runtime release notes [3rd-party]",
    ),
}

# The CUDA major version PyPI's default (no +cuXXX) torch wheel bundles, by torch minor version.
# 2.13 -> 13 is checked (docs/reference/workloads.md: cuda-toolkit 13.0.3, nvidia-cudnn-cu13).
_TORCH_DEFAULT_CUDA: list[tuple[tuple[int, int], int]] = [((2, 10), 13), ((1, 0), 12)]
# PyTorch's wheel index for a CUDA major version a platform driver runs
_TORCH_INDEX: dict[int, str] = {12: "cu126", 11: "cu118"}
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?\s*(==|~=|>=|<=|>|<|!=)?\s*([^;\s#]*)"
)
_CUDA_FROM = re.compile(r"cuda:(\d+)\.(\d+)")
_CU_SUFFIX = re.compile(r"\+cu(\d{2,3})\b")
_CU_INDEX = re.compile(r"/whl/cu(\d{2,3})\b")
_CPU = re.compile(r"\+cpu\b|/whl/cpu\b")
# one package under a CPU-only distribution name: the platform's own build stands for it
_SAME_PACKAGE = {"tensorflow-cpu": "tensorflow"}


@dataclass
class Lowered:
    """The image as a kernel sees it, and what stands in the way on the platform."""

    pins: list[Pin] = field(default_factory=list[Pin])
    pip_options: list[str] = field(default_factory=list[str])
    warnings: list[str] = field(default_factory=list[str])
    problems: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])  # (what, fix)
    notes: list[str] = field(default_factory=list[str])

    @property
    def requirements(self) -> list[dict[str, str]]:
        return [p.kernel_json() for p in self.pins]


def read_requirements(path: Path) -> tuple[list[Pin], list[str], list[str]]:
    """(pins, pip options such as --extra-index-url, warnings) of a requirements file."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    pins: list[Pin] = []
    options: list[str] = []
    warnings: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):  # --extra-index-url, --find-links: passed on to pip
            options.extend(line.split())
            continue
        m = _PIN.match(line)
        if m is None:
            warnings.append(f"{path}: cannot read requirement {line!r}; it is skipped")
            continue
        pins.append(
            Pin(
                name=m.group(1),
                extras=m.group(2) or "",
                op=m.group(3) or "",
                version=m.group(4),
                line=line,
            )
        )
    return pins, options, warnings


def _numbers(version: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        out.append(int(digits.group()))
    return tuple(out)


def satisfied(have: str, op: str, want: str) -> bool:
    """Does version `have` meet `op want`? (The kernel's rule: a ==x.y.z pin also takes the same
    feature release x.y, so a platform's 2.6.1 keeps a job pinned to 2.6.0.)"""
    if not op or not want:
        return True
    h, w = _numbers(have), _numbers(want)
    if op == "==":
        return h[: len(w)] + (0,) * (len(w) - len(h)) == w or (len(w) > 2 and h[:2] == w[:2])
    if op == "~=":
        keep = max(1, len(w) - 1)
        return h >= w and h[:keep] == w[:keep]
    return {">=": h >= w, "<=": h <= w, ">": h > w, "<": h < w, "!=": h != w}.get(op, True)


def framework_cuda(pin: Pin, pip_options: list[str]) -> int | None:
    """The CUDA major version installing `pin` brings (None: no CUDA, or not a framework we
    know). torch: a +cuXXX build, a /whl/cuXXX index, or PyPI's default build of that version;
    tensorflow[and-cuda]: CUDA 12 libraries; jax[cudaNN]: CUDA NN."""
    name = pin.name.lower()
    if name == "torch":
        where = " ".join([pin.line, *pip_options])
        if _CPU.search(where):
            return None
        cu = _CU_SUFFIX.search(pin.line) or _CU_INDEX.search(where)
        if cu is not None:
            return int(cu.group(1)[:-1])  # cu126 -> 12, cu130 -> 13
        if pin.op not in ("==", "~=", ">=", ">") or not pin.version:
            return None  # whatever pip picks: unknown
        version = _numbers(pin.version)[:2]
        return next(cuda for since, cuda in _TORCH_DEFAULT_CUDA if version >= since)
    if name in ("tensorflow", "tf-nightly") and "and-cuda" in pin.extras:
        return 12
    if name == "jax":
        found = re.search(r"cuda(\d+)", pin.extras)
        return int(found.group(1)) if found else None
    return None


def _base_cuda(image_dir: Path) -> int | None:
    dockerfile = image_dir / "Dockerfile"
    if dockerfile.is_file():
        found = _CUDA_FROM.search(dockerfile.read_text(encoding="utf-8"))
        if found is not None:
            return int(found.group(1))
    return None


def cuda_needed(image_dir: Path | None, requirements: str = "requirements.txt") -> int | None:
    """The newest CUDA major an image needs from the host's driver: its base image's, or the
    one its framework pins bring, whichever is newer."""
    if image_dir is None:
        return None
    pins, options, _ = read_requirements(image_dir / requirements)
    found = [c for p in pins if (c := framework_cuda(p, options)) is not None]
    base = _base_cuda(image_dir)
    if base is not None:
        found.append(base)
    return max(found) if found else None


def lower(
    requirements: Path | None,
    stack: Stack,
    *,
    gpu: bool,
    label: str = "",
    image_dir: Path | None = None,
    option_key: str = "",
) -> Lowered:
    """A requirements file (an image folder's, or what a registry image has installed) for
    `stack`'s platform: each pin kept for install, and what cannot work there. `label` names the
    file in messages, `image_dir` (when there is one) its Dockerfile's CUDA base, `option_key`
    the spec key a user changes to pick another file, for the fix."""
    out = Lowered()
    if requirements is None:
        return out
    out.pins, out.pip_options, out.warnings = read_requirements(requirements)
    where = label or str(requirements)
    for pin in out.pins:
        have = stack.preinstalled.get(_SAME_PACKAGE.get(pin.name.lower(), pin.name.lower()))
        if have is not None and satisfied(have, pin.op, pin.version):
            out.notes.append(
                f"{pin.line}: uses {stack.platform}'s own {pin.name} {have} (no install)"
            )
            continue
        cuda = framework_cuda(pin, out.pip_options)
        if cuda is None or cuda <= stack.driver_cuda:
            continue
        what = (
            f"{where}: {pin.line} installs a build for CUDA {cuda}, and {stack.platform}'s GPU "
            f"driver runs CUDA {stack.driver_cuda} (as of {stack.as_of}): the job would not see "
            "the GPU"
        )
        also = f", or set {option_key} to a file pinned that way" if option_key else ""
        index = _TORCH_INDEX.get(stack.driver_cuda)
        torch = f" (torch: --extra-index-url https://download.pytorch.org/whl/{index})"
        fix = f"pin a build for CUDA {stack.driver_cuda} in {where}" + (torch if index else "")
        fix += also
        if have is not None:
            fix += f", or accept {stack.platform}'s {pin.name} {have} (e.g. {pin.name}>={have})"
        if gpu:
            out.problems.append((what, fix))
        else:
            out.warnings.append(f"{what} (a CPU job: it still runs)")
    base = _base_cuda(image_dir) if image_dir is not None else None
    if base is not None and base != stack.driver_cuda:
        out.warnings.append(
            f"the image is built for CUDA {base}, {stack.platform}'s GPU images have CUDA "
            f"{stack.driver_cuda}: GPU packages pinned for CUDA {base} may not load there"
        )
    return out


def frozen_requirements(ref: str, home: Path, notify: Callable[[str], None]) -> Path:
    """What a registry image has installed (`pip freeze` inside it), as a requirements file
    cached by the image's id: how a notebook platform lowers an image it cannot run. Needs a
    docker engine here; packages installed from a path or URL are left out (with a warning)."""
    from launcher.targets.local.docker_client import DockerClient

    if not DockerClient.engine_answers():
        raise TargetUnavailableError(
            f"{ref} is a registry image: lowering it to what a notebook installs needs its "
            "`pip freeze`, and no docker engine answers here to run it",
            hint="start docker, or name an image folder under images/ (its requirements.txt)",
        )
    docker = DockerClient()
    image_id = docker.image_id(ref)
    if image_id is None:
        notify(f"pulling {ref} to read what it has installed")
        image_id = docker.pull(ref)
    path = home / "lowered" / f"{image_id.replace(':', '-')}.txt"
    if not path.is_file():
        out = docker.run_once(ref, ["python3", "-m", "pip", "freeze", "--exclude-editable"])
        kept: list[str] = [f"# pip freeze of {ref} ({image_id})"]
        for line in out.splitlines():
            if " @ " in line:  # installed from a path or URL the platform cannot reach
                notify(
                    f"warning: {ref}: {line.split(' @ ')[0]} was installed from a path; skipped"
                )
            elif line.strip():
                kept.append(line.strip())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n".join(kept) + "\n")
    return path


def lower_job(
    spec: JobSpec,
    platform: str,
    requirements: str | None,
    home: Path,
    notify: Callable[[str], None],
) -> Lowered:
    """The job's image lowered for a notebook platform (`STACKS[platform]`): the image folder's
    requirements file (`targets.<platform>.requirements` names which; by default its CPU twin
    for a job without a GPU, see `requirements_for`), or for a registry image that file
    relative to the project, else what the image has installed."""
    from launcher.images import requirements_for

    requirements = requirements_for(spec, requirements)
    gpu = spec.resources.gpu.count > 0
    key = f"targets.{platform}.requirements"
    if spec.image_dir is not None:
        req = spec.image_dir / requirements
        label = f"images/{spec.image}/{requirements}"
    elif spec.image_ref is not None and requirements != "requirements.txt":
        req, label = spec.project_root / requirements, requirements
    elif spec.image_ref is not None:
        req = frozen_requirements(spec.image_ref, home, notify)
        label = f"what {spec.image_ref} has installed"
    else:
        return Lowered()
    if requirements != "requirements.txt" and not req.is_file():
        raise TargetUnavailableError(f"{key}: {req} does not exist")
    return lower(
        req, STACKS[platform], gpu=gpu, label=label, image_dir=spec.image_dir, option_key=key
    )
