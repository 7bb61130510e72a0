"""Kernels: push (SaveKernel), status, output, GetKernel and cancel; each run is a Session.

Request and response fields are kagglesdk's (`kagglesdk/kernels/types/kernels_api_service.py`);
the mapping from kernel-metadata.json is reference §1.3. Every push of a kernel is a new version
and, unless it is a quick save, a new session that really runs (`runner.py`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from launcher.sim.kaggle.datasets import DatasetStore
from launcher.sim.kaggle.quota import QuotaBook, accelerator_of
from launcher.sim.kaggle.rpc import WEB, RpcError, split_ref
from launcher.sim.kaggle.runner import COMPLETE, Runner, Session


@dataclass
class KernelVersion:
    number: int
    text: str
    session: Session | None


@dataclass
class Kernel:
    id: int
    owner: str
    slug: str
    title: str
    language: str
    kernel_type: str
    is_private: bool = True
    meta: dict[str, Any] = field(default_factory=dict[str, Any])
    versions: list[KernelVersion] = field(default_factory=list[KernelVersion])

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"


class KernelStore:
    def __init__(
        self, root: Path, datasets: DatasetStore, quota: QuotaBook, runner: Runner
    ) -> None:
        self._root = root
        self._datasets = datasets
        self._quota = quota
        self._runner = runner
        self._kernels: dict[tuple[str, str], Kernel] = {}
        self._sessions: dict[int, Session] = {}
        self._lock = threading.Lock()
        self._next_kernel = 1001
        self._next_session = 50_000_001
        self.reject_next: str | None = None  # knob: the next SaveKernel answers this error
        # knob: the next SaveKernel fails with (mode, status, message): "error" before it acts,
        # "lost" after (the kernel version and its session exist; the answer is the error)
        self.fail_push: tuple[str, int, str] | None = None
        self.fail_next: str | None = None  # knob: the next session's script fails with this
        self.secrets: dict[str, dict[str, str]] = {}  # owner (lowercase) -> label -> value
        quota.running = self._running_seconds

    # -- helpers ----------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def session(self, session_id: int) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def _running_seconds(self, user: str, accelerator: str) -> float:
        now = time.time()
        return sum(
            s.running_seconds(now)
            for s in self.sessions()
            if s.owner.lower() == user.lower() and s.accelerator == accelerator and s.ended is None
        )

    def kernel(self, user: str, owner: str, slug: str) -> Kernel:
        with self._lock:
            k = self._kernels.get((owner.lower(), slug.lower()))
        if k is None or (k.is_private and k.owner.lower() != user.lower()):
            raise RpcError(404, "Not found")
        return k

    def latest_session(self, user: str, owner: str, slug: str, label: str | None) -> Session:
        k = self.kernel(user, owner, slug)
        if label:
            try:
                number = int(str(label).lstrip("v"))
            except ValueError as e:
                raise RpcError(404, "Not found") from e
            v = next((v for v in k.versions if v.number == number), None)
            if v is None or v.session is None:
                raise RpcError(404, "Not found")
            return v.session
        for v in reversed(k.versions):
            if v.session is not None:
                return v.session
        raise RpcError(404, "Not found")

    # -- RPCs -------------------------------------------------------------------------------

    def save(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.reject_next is not None:
            msg, self.reject_next = self.reject_next, None
            return {"error": msg}
        failure, self.fail_push = self.fail_push, None
        if failure is not None and failure[0] == "error":
            raise RpcError(failure[1], failure[2] or "injected failure")
        owner, slug = self._target(user, body)
        if owner.lower() != user.lower():
            raise RpcError(403, f"user {user} cannot push kernels for {owner}")
        text = body.get("text")
        if not text:
            return {"error": "The kernel has no source text"}
        inputs, invalid = self._inputs(user, body)
        accelerator = accelerator_of(
            bool(body.get("enableGpu")), bool(body.get("enableTpu")), body.get("machineShape")
        )
        if accelerator and self._quota.remaining(user, accelerator) <= 0:
            return {"error": f"You have used up your weekly {accelerator.upper()} quota"}
        with self._lock:
            k = self._kernels.get((owner.lower(), slug.lower()))
            if k is None:
                k = Kernel(
                    id=self._next_kernel,
                    owner=owner,
                    slug=slug,
                    title=body.get("newTitle") or slug,
                    language=body.get("language") or "python",
                    kernel_type=body.get("kernelType") or "script",
                )
                self._next_kernel += 1
                self._kernels[(owner.lower(), slug.lower())] = k
            k.title = body.get("newTitle") or k.title
            k.language = body.get("language") or k.language
            k.kernel_type = body.get("kernelType") or k.kernel_type
            k.is_private = bool(body.get("isPrivate", k.is_private))
            k.meta = {key: body.get(key) for key in _META_FIELDS if key in body}
            number = (k.versions[-1].number + 1) if k.versions else 1
            session: Session | None = None
            if body.get("kernelExecutionType") != "QUICK_SAVE":
                sid = self._next_session
                self._next_session += 1
                session = Session(
                    id=sid,
                    owner=k.owner,
                    slug=k.slug,
                    version=number,
                    text=text,
                    language=k.language,
                    kernel_type=k.kernel_type,
                    accelerator=accelerator,
                    timeout_seconds=body.get("sessionTimeoutSeconds"),
                    enable_internet=bool(body.get("enableInternet", False)),
                    inputs=inputs,
                    dir=self._root / str(sid),
                    inject_failure=self.fail_next,
                    secrets=dict(self.secrets.get(k.owner.lower(), {})),
                )
                self.fail_next = None
                self._sessions[sid] = session
            k.versions.append(KernelVersion(number, text, session))
        if session is not None:
            self._runner.start(session, self._ended)
        if failure is not None:  # "lost": Kaggle acted, its answer did not arrive
            raise RpcError(failure[1], failure[2] or "injected: the answer was lost")
        return {
            "ref": f"/code/{k.ref}",
            "url": f"{WEB}/code/{k.ref}",
            "versionNumber": number,
            "kernelId": k.id,
            "invalidDatasetSources": invalid["datasets"],
            "invalidKernelSources": invalid["kernels"],
        }

    def status(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        owner, slug = body.get("userName", ""), body.get("kernelSlug", "")
        try:
            s = self.latest_session(user, owner, slug, body.get("versionLabel"))
        except RpcError:
            self.kernel(user, owner, slug)  # 404 when the kernel itself is unknown
            return {"status": "NEW_SCRIPT"}  # saved, never run (a quick save)
        out: dict[str, Any] = {"status": s.status}
        if s.failure_message:
            out["failureMessage"] = s.failure_message
        return out

    def output(self, user: str, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        s = self.latest_session(
            user, body.get("userName", ""), body.get("kernelSlug", ""), body.get("versionLabel")
        )
        files: list[dict[str, str]] = []
        if s.terminal:  # /kaggle/working is saved when the session ends
            for p in sorted(s.working.rglob("*")):
                if p.is_file():
                    rel = p.relative_to(s.working).as_posix()
                    files.append(
                        {"url": f"{base_url}/_emu/output/{s.id}/{quote(rel)}", "fileName": rel}
                    )
        size = int(body.get("pageSize") or 20)
        start = int(body.get("pageToken") or 0)
        out: dict[str, Any] = {"files": files[start : start + size], "log": self.log_text(s)}
        if start + size < len(files):
            out["nextPageToken"] = str(start + size)
        return out

    def get(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        k = self.kernel(user, body.get("userName", ""), body.get("kernelSlug", ""))
        v = k.versions[-1]
        blob = {"source": v.text, "language": k.language, "kernelType": k.kernel_type}
        return {"metadata": self._metadata(k), "blob": {**blob, "slug": k.slug}}

    def list_kernels(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """`kernels list`: --mine is group PROFILE; ``user`` and ``search`` filter."""
        mine = "PROFILE" in str(body.get("group", "")).upper()
        owner = user if mine else str(body.get("user") or "")
        search = str(body.get("search") or "").lower()
        with self._lock:
            found = [
                k
                for k in self._kernels.values()
                if (not k.is_private or k.owner.lower() == user.lower())
                and (not owner or k.owner.lower() == owner.lower())
                and (search in k.title.lower() or search in k.slug.lower())
            ]
        size = int(body.get("pageSize") or 20)
        start = int(body.get("pageToken") or 0) or (int(body.get("page") or 1) - 1) * size
        out: dict[str, Any] = {"kernels": [self._metadata(k) for k in found[start : start + size]]}
        if start + size < len(found):
            out["nextPageToken"] = str(start + size)
        return out

    def delete(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        k = self.kernel(user, body.get("userName", ""), body.get("kernelSlug", ""))
        if k.owner.lower() != user.lower():
            raise RpcError(403, f"user {user} cannot delete {k.ref}")
        for v in k.versions:
            if v.session is not None:
                v.session.request_stop("cancel")
        with self._lock:
            self._kernels.pop((k.owner.lower(), k.slug.lower()), None)
        return {}

    @staticmethod
    def _metadata(k: Kernel) -> dict[str, Any]:
        v = k.versions[-1]
        runs = [x.session.started for x in k.versions if x.session and x.session.started]
        last_run = datetime.fromtimestamp(runs[-1], UTC).replace(tzinfo=None) if runs else None
        return {
            "lastRunTime": last_run.isoformat(timespec="milliseconds") + "Z" if last_run else None,
            "id": k.id,
            "ref": k.ref,
            "title": k.title,
            "author": k.owner,
            "slug": k.slug,
            "language": k.language,
            "kernelType": k.kernel_type,
            "isPrivate": k.is_private,
            "currentVersionNumber": v.number,
            **{key: val for key, val in k.meta.items() if val is not None},
        }

    def cancel(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """CancelKernelSession takes a kernel SESSION id (kagglesdk's
        ApiCancelKernelSessionRequest.kernel_session_id): a kernel id, another user's session,
        or a session of a deleted kernel is 404 Not found, as any id Kaggle does not know."""
        sid = body.get("kernelSessionId")
        s = self.session(sid) if isinstance(sid, int) and not isinstance(sid, bool) else None
        if s is None or s.owner.lower() != user.lower() or not self._live(s):
            raise RpcError(404, "Not found")
        if s.terminal:
            return {"errorMessage": f"The session is already {s.status}"}
        s.request_stop("cancel")
        return {}

    # -- internals --------------------------------------------------------------------------

    def _live(self, s: Session) -> bool:
        """The session belongs to a kernel that still exists (not a deleted one's)."""
        with self._lock:
            k = self._kernels.get((s.owner.lower(), s.slug.lower()))
            return k is not None and any(v.session is s for v in k.versions)

    @staticmethod
    def log_text(s: Session) -> str:
        with s.changed:
            return json.dumps(s.log)

    def _target(self, user: str, body: dict[str, Any]) -> tuple[str, str]:
        if body.get("slug"):
            ref = str(body["slug"])
            if "/" not in ref:
                return user, ref
            owner, slug, _ = split_ref(ref)
            return owner, slug
        with self._lock:
            k = next((k for k in self._kernels.values() if k.id == body.get("id")), None)
        if k is None:
            raise RpcError(404, "Not found")
        return k.owner, k.slug

    def _inputs(
        self, user: str, body: dict[str, Any]
    ) -> tuple[list[tuple[str, Path]], dict[str, list[str]]]:
        inputs: list[tuple[str, Path]] = []
        invalid: dict[str, list[str]] = {"datasets": [], "kernels": []}
        for ref in map(str, body.get("datasetDataSources") or []):
            found = self._dataset_input(user, ref)
            if found is None:
                invalid["datasets"].append(ref)
            else:
                inputs.append(found)
        for ref in map(str, body.get("kernelDataSources") or []):
            found = self._kernel_input(user, ref)
            if found is None:
                invalid["kernels"].append(ref)
            else:
                inputs.append(found)
        return inputs, invalid

    def _dataset_input(self, user: str, ref: str) -> tuple[str, Path] | None:
        try:
            owner, slug, number = split_ref(ref)
            version = self._datasets.visible(user, owner, slug).version(number)
        except RpcError:
            return None
        return (slug, version.path) if version else None

    def _kernel_input(self, user: str, ref: str) -> tuple[str, Path] | None:
        """A kernel source mounts the output of its latest session that completed."""
        try:
            owner, slug, _ = split_ref(ref)
            k = self.kernel(user, owner, slug)
        except RpcError:
            return None
        done = [v.session for v in k.versions if v.session and v.session.status == COMPLETE]
        return (k.slug, done[-1].working) if done else None

    def _ended(self, s: Session) -> None:
        if s.accelerator is not None:
            self._quota.charge(s.owner, s.accelerator, s.running_seconds())


_META_FIELDS = (
    "enableGpu",
    "enableTpu",
    "enableInternet",
    "datasetDataSources",
    "kernelDataSources",
    "competitionDataSources",
    "modelDataSources",
    "categoryIds",
    "dockerImage",
    "machineShape",
)
