"""What a Kaggle run keeps (its prepared job, one handle per session) and the names it gives
things on Kaggle.

Every kernel and dataset name starts with "launch-" (`launch gc` looks for that); a kernel's title
carries the run id and the key of the store that pushed it ("launch <run id> s<N> <store key>"),
since slugs cannot hold every run id character. The slug ends with the same key, so the title
still resolves to the slug (Kaggle's warning when it does not) for short job names, and two
stores on one account never push to each other's kernel. Kernels of a launch from before the key
have titles "launch <run id> s<N>".
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field

from launcher.store.identity import is_store_key
from launcher.targets.base import Handle, Prepared
from launcher.targets.jobfiles import seconds_between

__all__ = ["seconds_between"]  # the sessions' code reads it from here

PREFIX = "launch-"
BUNDLE_PREFIX = f"{PREFIX}bundle-"
MAX_SLUG = 50  # Kaggle's limit for dataset slugs [CLI validation]; kernels are kept as short


def slugify(text: str, limit: int) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "job"


def run_core(run_id: str, job_room: int = 29) -> str:
    """The run id as a slug part: the job (cut to `job_room`) and the id's random suffix."""
    job, _, suffix = run_id.rpartition("-")
    if not job:
        return slugify(run_id, job_room + 7)
    return f"{slugify(job, job_room)}-{slugify(suffix, 6)}"


def kernel_slug(run_id: str, session: int, owner: str) -> str:
    # launch-<job 20>-<6>-s<N>-<key 8>: at most 48 characters up to session 99
    return f"{PREFIX}{run_core(run_id, 20)}-s{session}-{owner}"


def kernel_title(run_id: str, session: int, owner: str) -> str:
    return f"launch {run_id} s{session} {owner}"


def parse_title(title: str) -> tuple[str, str] | None:
    """(run id, store key) of a kernel title launch made, the key "" for an older launch's."""
    m = re.fullmatch(r"launch (\S+) s\d+(?: (\S+))?", title.strip())
    if m is None or (m.group(2) is not None and not is_store_key(m.group(2))):
        return None
    return m.group(1), m.group(2) or ""


def bundle_slug(job: str) -> str:
    return f"{BUNDLE_PREFIX}{slugify(job, MAX_SLUG - len(BUNDLE_PREFIX))}"


ASSETS_PREFIX = f"{PREFIX}assets-"


def assets_slug(job: str) -> str:
    """The dataset of the bundle's big files (datasets.split_bundle), shared by the job's runs."""
    return f"{ASSETS_PREFIX}{slugify(job, MAX_SLUG - len(ASSETS_PREFIX))}"


INPUT_PREFIX = f"{PREFIX}input-"


def input_slug(job: str, name: str) -> str:
    """The private dataset that carries a job's local input folder `name` (shared by its runs).
    A hash of (job, name) ends it: cut or folded names of two inputs never share a dataset."""
    tag = hashlib.sha256(f"{job}\0{name}".encode()).hexdigest()[:6]
    room = MAX_SLUG - len(INPUT_PREFIX) - len(tag) - 1
    return f"{INPUT_PREFIX}{slugify(f'{job}-{name}', room)}-{tag}"


def state_slug(run_id: str, attempt: int) -> str:
    return f"{PREFIX}state-{run_core(run_id)}-a{attempt}"


class KernelJob(BaseModel):
    """The job's part of every session's kernel configuration (the JSON the kernel reads; see
    kernel.py). Holds NAMES of secrets, never values."""

    model_config = ConfigDict(extra="ignore")

    requirements: list[dict[str, str]] = Field(default_factory=list[dict[str, str]])
    pip_options: list[str] = Field(default_factory=list[str])
    secrets: list[str] = Field(default_factory=list[str])
    inputs: list[tuple[str, str]] = Field(default_factory=list[tuple[str, str]])  # (as, slug)
    # local folders uploaded as private datasets: (as, slug, file, sha256), unpacked at start
    packed: list[tuple[str, str, str, str]] = Field(
        default_factory=list[tuple[str, str, str, str]]
    )
    # the bundle's big files, unpacked beside the rest at start: (slug, file, sha256)
    assets: tuple[str, str, str] | None = None
    session_s: float
    safety_s: float  # the kernel's own start and the output save must fit in the session too


class PackedInput(BaseModel):
    """A local input folder packed for Kaggle: uploaded as `file` into the private dataset
    `slug` unless its current version already has it (the name carries the content digest)."""

    name: str  # its folder under $LAUNCH_INPUT_DIR
    slug: str
    archive: str  # the packed folder here
    file: str  # input-<content digest>.tar.gz
    sha256: str  # of the archive, checked by the kernel before it unpacks


class BundleParts(BaseModel):
    """The bundle as Kaggle receives it (datasets.split_bundle): the code part (the whole bundle
    when it has no big file) and the big files, each (archive here, sha256)."""

    code: tuple[str, str]
    assets: tuple[str, str] | None = None

    @property
    def code_file(self) -> str:
        return part_file("bundle", self.code[1])

    @property
    def assets_file(self) -> str:
        return part_file("assets", self.assets[1]) if self.assets else ""


def part_file(kind: str, sha256: str) -> str:
    """A bundle part's file name in its dataset: named for its content, so whether Kaggle
    already holds it is read from the dataset's file list."""
    return f"{kind}-{sha256[:16]}.tar.gz"


class KagglePrepared(Prepared):
    job: str
    parts: BundleParts | None = None  # None in runs prepared before the split: the whole bundle
    kernel: KernelJob
    sources: list[str] = Field(default_factory=list[str])  # the job's input datasets
    packed: list[PackedInput] = Field(default_factory=list[PackedInput])
    accelerator: str | None = None
    internet: bool = True


class KaggleHandle(Handle):
    """One session of a run: the kernel pushed for it, and what it starts from."""

    owner: str
    kernel_slug: str
    kernel_id: int | None = None  # SaveKernel's answer: the kernel's id, never its session's
    # the id CancelKernelSession takes; only the kernel itself knows it (it says it first in its
    # log: outputs.SESSION_LINE), so it is stored once the log showed it (`advance`)
    kernel_session_id: int | None = None
    bundle_ref: str  # owner/slug/versions/N
    input_refs: list[str] = Field(
        default_factory=list[str]
    )  # packed inputs' owner/slug/versions/N
    state_slug: str | None = None  # the state dataset this session resumed from, if any
    job_left_s: float | None = None  # of the job's time limit, when this session started
    session_s: float = 12 * 3600.0  # the session cap the kernel plans with
    stop_margin_s: float = 60.0  # how early the agent stops before a limit
    accelerator: str | None = None
    pushed_at: float = 0.0  # epoch seconds: a kernel not visible long after this is lost
    quota_used_at_start: float | None = None  # seconds of weekly accelerator quota used

    @property
    def kernel_ref(self) -> str:
        return f"{self.owner}/{self.kernel_slug}"
