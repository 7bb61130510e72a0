"""What a Kaggle run keeps in `RunHandle.data`, and the names it gives things on Kaggle.

Every kernel and dataset name starts with "launch-" (`launch gc` looks for that); a kernel's title
carries the run id ("launch <run id> s<N>"), since slugs cannot hold every run id character.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "launch-"
BUNDLE_PREFIX = f"{PREFIX}bundle-"
MAX_SLUG = 50  # Kaggle's limit for dataset slugs [CLI validation]; kernels are kept as short


def slugify(text: str, limit: int) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "job"


def run_core(run_id: str) -> str:
    """The run id as a slug part: the job (cut to fit) and the id's random suffix."""
    job, _, suffix = run_id.rpartition("-")
    if not job:
        return slugify(run_id, 36)
    return f"{slugify(job, 29)}-{slugify(suffix, 6)}"


def kernel_slug(run_id: str, session: int) -> str:
    return f"{PREFIX}{run_core(run_id)}-s{session}"


def kernel_title(run_id: str, session: int) -> str:
    return f"launch {run_id} s{session}"


def run_of_title(title: str) -> str | None:
    m = re.fullmatch(r"launch (\S+) s\d+", title.strip())
    return m.group(1) if m else None


def bundle_slug(job: str) -> str:
    return f"{BUNDLE_PREFIX}{slugify(job, MAX_SLUG - len(BUNDLE_PREFIX))}"


def state_slug(run_id: str) -> str:
    return f"{PREFIX}state-{run_core(run_id)}"


def seconds_between(start: Any, end: Any) -> float:
    """Seconds from one agent timestamp (ISO, Z) to another; 0 when either is missing."""
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (b - a).total_seconds())


class KaggleHandle(BaseModel):
    """Written strict, read lenient (a newer launcher may add fields)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    job: str
    owner: str
    output_dir: str
    session: int = 1
    kernel_slug: str
    kernel_id: int | None = None
    kernels: list[str] = Field(default_factory=list[str])  # every kernel this run pushed
    bundle_ref: str  # owner/slug/versions/N
    bundle_file: str
    bundle_sha256: str
    state_slug: str
    state_version: int = 0  # 0: no state dataset made yet
    kernel_config: dict[str, Any] = Field(default_factory=dict[str, Any])
    sources: list[str] = Field(default_factory=list[str])  # the job's input datasets
    accelerator: str | None = None
    internet: bool = True
    session_s: float
    job_limit_s: float | None = None
    used_s: float = 0.0  # job time the finished sessions used
    allow_chaining: bool = True
    max_sessions: int = 10
    log_base: int = 0  # log entries of the sessions before this one
    quota_used_at_start: float | None = None  # seconds of weekly accelerator quota used

    @property
    def kernel_ref(self) -> str:
        return f"{self.owner}/{self.kernel_slug}"

    @classmethod
    def first(
        cls,
        run_id: str,
        owner: str,
        prepared: dict[str, Any],
        *,
        bundle_ref: str,
        bundle_file: str,
        bundle_sha256: str,
    ) -> KaggleHandle:
        """The handle of session 1, from `Prepared.data` and the bundle's dataset."""
        d = prepared
        return cls(
            run_id=run_id,
            job=str(d["job"]),
            owner=owner,
            output_dir=str(d["output_dir"]),
            kernel_slug=kernel_slug(run_id, 1),
            state_slug=state_slug(run_id),
            kernel_config=dict(d["kernel_config"]),
            sources=list(d["sources"]),
            accelerator=d["accelerator"],
            internet=bool(d["internet"]),
            session_s=float(d["session_s"]),
            job_limit_s=d["job_limit_s"],
            allow_chaining=bool(d["allow_chaining"]),
            max_sessions=int(d["max_sessions"]),
            bundle_ref=bundle_ref,
            bundle_file=bundle_file,
            bundle_sha256=bundle_sha256,
        )
