"""Kaggle's RPCs as typed methods, and the small models they return.

`KaggleRpc` is mixed into `KaggleClient` (client.py), which supplies `call` (one RPC with retries,
the answer as a dict). Kaggle's RPC names and JSON field names stay in these two modules; the rest
of the target reads the models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, cast

from pydantic import BaseModel, Field

from launcher.errors import TargetError

WEB = "https://www.kaggle.com"  # where Kaggle's answers point (only ever printed)


class KaggleNotFoundError(TargetError):
    """Kaggle answered 404: the kernel, dataset or session does not exist (or is not ours)."""


class KaggleUnsureError(TargetError):
    """A call that is not safe to repeat failed in a way that leaves open whether Kaggle acted
    on it (a 5xx, a timeout, a connection dropped after the request went out). `detail` is
    what went wrong ("502 Bad Gateway")."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class KernelPush(BaseModel):
    """What SaveKernel answered: the kernel, or why Kaggle refused it (a 200 answer that the
    kaggle CLI prints and exits 0 on)."""

    kernel_id: int | None = None
    version: int | None = None
    url: str = ""
    error: str = ""
    invalid_sources: list[str] = Field(default_factory=list[str])


class KernelMeta(BaseModel):
    """GetKernel's metadata: the kernel's id, its title, and its newest version (None when
    Kaggle leaves the optional field out)."""

    id: int | None = None
    title: str = ""
    version: int | None = None


class KernelSession(BaseModel):
    """GetKernelSessionStatus: "QUEUED" | "NEW_SCRIPT" | "RUNNING" | "CANCEL_REQUESTED" |
    "COMPLETE" | "ERROR" | "CANCEL_ACKNOWLEDGED" ("" when kagglesdk left out the default)."""

    status: str = ""
    failure_message: str = ""


class LogEntry(BaseModel):
    """One entry of a session's log: {"stream_name": "stdout"|"stderr", "time", "data"}."""

    stream_name: str = ""
    data: str = ""


def log_entries(items: list[dict[str, Any]]) -> list[LogEntry]:
    return [
        LogEntry(stream_name=str(e.get("stream_name") or ""), data=str(e.get("data") or ""))
        for e in items
    ]


class OutputFile(BaseModel):
    name: str
    url: str


class KernelInfo(BaseModel):
    ref: str  # owner/slug
    slug: str
    title: str


class DatasetInfo(BaseModel):
    ref: str
    version: int = 1


class KaggleRpc(ABC):
    attempts: int = 1  # tries of one call (the client's setting)

    @abstractmethod
    def call(
        self, service: str, method: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """One RPC (`{service}.{Method}`) with retries; the response as a dict.

        Not `idempotent`: retried only where Kaggle cannot have acted (a 429, a connection that
        never opened); where it may have, `KaggleUnsureError` is raised for the caller to look."""

    @abstractmethod
    def pause(self, attempt: int) -> None:
        """Wait before try `attempt + 1` of something the caller retries itself."""

    @abstractmethod
    def note(self, message: str) -> None:
        """One line for the user (what was done instead of what was asked)."""

    # ---- kernels ----------------------------------------------------------------------------

    def save_kernel(
        self,
        ref: str,
        *,
        title: str,
        source: str,
        accelerator: str | None,
        internet: bool,
        sources: list[str],
        timeout_s: float,
    ) -> KernelPush:
        """Push a private script kernel (a new version when it exists); Kaggle runs it."""
        tpu = bool(accelerator) and str(accelerator).startswith("Tpu")
        body: dict[str, Any] = {
            "slug": ref,
            "newTitle": title,
            "text": source,
            "language": "python",
            "kernelType": "script",
            "isPrivate": True,
            "enableGpu": bool(accelerator) and not tpu,
            "enableTpu": tpu,
            "enableInternet": internet,
            "datasetDataSources": sources,
            "sessionTimeoutSeconds": int(timeout_s),
        }
        if accelerator:
            body["machineShape"] = accelerator
        resp = self._push_once(ref, body)
        if isinstance(resp, KernelPush):
            return resp
        kid, version = resp.get("kernelId"), resp.get("versionNumber")
        invalid: list[Any] = list(resp.get("invalidDatasetSources") or [])
        return KernelPush(
            kernel_id=int(kid) if kid is not None else None,
            version=int(version) if version is not None else None,
            url=str(resp.get("url") or ""),
            error=str(resp.get("error") or ""),
            invalid_sources=[str(x) for x in invalid],
        )

    def _push_once(self, ref: str, body: dict[str, Any]) -> dict[str, Any] | KernelPush:
        """SaveKernel, made at most once: every push starts a session that spends quota, so a
        push whose answer was lost (a 5xx or a timeout after Kaggle may have acted) is not sent
        again before the kernel shows that no new version came of it; one that did is adopted.
        The answer, or the adopted push."""
        owner, _, slug = ref.partition("/")
        before = self.kernel_meta(owner, slug)
        for attempt in range(1, self.attempts + 1):
            try:
                return self.call("kernels", "save_kernel", body, idempotent=False)
            except KaggleUnsureError as e:
                self.pause(attempt)  # a slow push may still land: give it time before looking
                now = self.kernel_meta(owner, slug)
                if now is not None and (
                    before is None or (now.version or 0) > (before.version or 0)
                ):
                    self.note(
                        f"Kaggle's answer to the push of {ref} was lost ({e.detail}), but it "
                        f"made version {now.version}: using that one, not pushing again"
                    )
                    return KernelPush(
                        kernel_id=now.id, version=now.version, url=f"{WEB}/code/{owner}/{slug}"
                    )
                if attempt == self.attempts:
                    raise TargetError(
                        f"Kaggle kernels.SaveKernel failed after {attempt} tries: {e.detail}"
                    ) from e
        raise AssertionError("unreachable")

    def kernel_meta(self, owner: str, slug: str) -> KernelMeta | None:
        """GetKernel's metadata; None when Kaggle does not know the kernel (404)."""
        try:
            resp = self.call("kernels", "get_kernel", {"userName": owner, "kernelSlug": slug})
        except KaggleNotFoundError:
            return None
        meta: Any = resp.get("metadata") or {}
        kid, version = meta.get("id"), meta.get("currentVersionNumber")
        return KernelMeta(
            id=int(kid) if kid else None,
            title=str(meta.get("title") or ""),
            version=int(version) if version is not None else None,
        )

    def kernel_session(self, owner: str, slug: str) -> KernelSession | None:
        """The kernel's latest session; None when Kaggle does not know the kernel (404)."""
        try:
            resp = self.call(
                "kernels", "get_kernel_session_status", {"userName": owner, "kernelSlug": slug}
            )
        except KaggleNotFoundError:
            return None
        return KernelSession(
            status=str(resp.get("status") or "").upper(),
            failure_message=str(resp.get("failureMessage") or ""),
        )

    def cancel_kernel_session(self, session_id: int) -> str:
        """Ask a running session to stop (its job gets SIGTERM). "" when Kaggle took it, else
        the `errorMessage` it answered; `KaggleNotFoundError` when it knows no such session.

        The id is a kernel SESSION id (kagglesdk's ApiCancelKernelSessionRequest), which no
        push or status answer carries: not the kernel id SaveKernel answers."""
        resp = self.call("kernels", "cancel_kernel_session", {"kernelSessionId": session_id})
        return str(resp.get("errorMessage") or "")

    def delete_kernel(self, owner: str, slug: str) -> None:
        """Delete a kernel (Kaggle stops its session); silent when it is already gone."""
        try:
            self.call("kernels", "delete_kernel", {"userName": owner, "kernelSlug": slug})
        except KaggleNotFoundError:
            pass

    def my_kernels(self) -> list[KernelInfo]:
        """Every kernel of the account (ListKernels, group PROFILE), all pages."""
        found: list[KernelInfo] = []
        token = ""
        for _page in range(100):
            body = {"group": "PROFILE", "pageSize": 100, "pageToken": token}
            resp = self.call("kernels", "list_kernels", body)
            for k in rows(resp, "kernels"):
                found.append(
                    KernelInfo(
                        ref=str(k.get("ref") or ""),
                        slug=str(k.get("slug") or ""),
                        title=str(k.get("title") or ""),
                    )
                )
            token = str(resp.get("nextPageToken") or "")
            if not token:
                break
        return found

    def session_output(self, owner: str, slug: str) -> tuple[list[OutputFile], str]:
        """Every output file of the kernel's latest session, and its log text (a JSON array)."""
        files: list[OutputFile] = []
        token = ""
        log = ""
        for _page in range(1000):
            resp = self.call(
                "kernels",
                "list_kernel_session_output",
                {"userName": owner, "kernelSlug": slug, "pageSize": 100, "pageToken": token},
            )
            for f in rows(resp, "files"):
                files.append(OutputFile(name=str(f.get("fileName") or ""), url=str(f.get("url"))))
            log = str(resp.get("log") or log)
            token = str(resp.get("nextPageToken") or "")
            if not token:
                break
        return files, log

    # ---- datasets ---------------------------------------------------------------------------

    def dataset(self, owner: str, slug: str) -> DatasetInfo | None:
        try:
            info = self.call("datasets", "get_dataset", {"ownerSlug": owner, "datasetSlug": slug})
        except KaggleNotFoundError:
            return None
        return DatasetInfo(
            ref=f"{owner}/{slug}", version=int(info.get("currentVersionNumber") or 1)
        )

    def dataset_files(self, owner: str, slug: str) -> list[str]:
        files = self.call(
            "datasets", "list_dataset_files", {"ownerSlug": owner, "datasetSlug": slug}
        )
        return [str(f.get("name") or "") for f in rows(files, "datasetFiles")]

    def dataset_status(self, owner: str, slug: str) -> str:
        """ "READY" once Kaggle has processed the current version (kernels can mount it)."""
        body = {"ownerSlug": owner, "datasetSlug": slug}
        return str(self.call("datasets", "get_dataset_status", body).get("status") or "").upper()

    def create_dataset(self, owner: str, slug: str, title: str, blob_token: str) -> None:
        """A new private dataset holding one uploaded blob."""
        resp = self.call(
            "datasets",
            "create_dataset",
            {
                "ownerSlug": owner,
                "slug": slug,
                "title": title,
                "licenseName": "unknown",
                "isPrivate": True,
                "files": [{"token": blob_token}],
            },
        )
        _checked(resp, f"the dataset {owner}/{slug}")

    def create_dataset_version(self, owner: str, slug: str, blob_token: str, notes: str) -> None:
        resp = self.call(
            "datasets",
            "create_dataset_version",
            {
                "ownerSlug": owner,
                "datasetSlug": slug,
                "body": {"versionNotes": notes, "files": [{"token": blob_token}]},
            },
        )
        _checked(resp, f"a new version of {owner}/{slug}")

    def delete_dataset(self, owner: str, slug: str) -> None:
        """Silent when it is already gone."""
        try:
            self.call("datasets", "delete_dataset", {"ownerSlug": owner, "datasetSlug": slug})
        except KaggleNotFoundError:
            pass


def _checked(resp: dict[str, Any], what: str) -> None:
    if str(resp.get("status") or "").lower() != "ok":
        raise TargetError(f"Kaggle refused {what}: {resp.get('error') or resp}")


def rows(resp: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of objects under `key` of a response (lists of anything else are dropped)."""
    items: Any = resp.get(key) or []
    found = cast("list[Any]", items) if isinstance(items, list) else []
    return [cast("dict[str, Any]", x) for x in found if isinstance(x, dict)]
