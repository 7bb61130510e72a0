"""The Colab target's Google Drive: the only module that imports pydrive2 (lazily).

Drive v2 through pydrive2, the user's OAuth credentials from `launch auth colab` (a service
account cannot own files in a personal Drive), the endpoint from `LAUNCH_DRIVE_URL` when set (the
emulator; see endpoint.py). Everything is addressed by file id. Rate limits (403/429) and server
errors are retried with backoff; other failures become `TargetError`s that say what failed.
Downloads use ranged GETs on one authorised connection and are checked against Drive's size and
md5Checksum.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from launcher import settings
from launcher.errors import TargetError, TargetUnavailableError
from launcher.targets.colab.endpoint import drive_url, point_pydrive2_at
from launcher.targets.colab.handle import FOLDER_MIME

INSTALL_HINT = "pip install 'launch[colab]'"
AUTH_HINT = "run `launch auth colab` (once: Google asks you to allow Drive access)"
CHUNK = 16 * 1024 * 1024
_RETRY_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
)
T = TypeVar("T")


def credentials_path(home: Path) -> Path:
    return settings.file("LAUNCH_COLAB_CREDENTIALS") or home / "colab" / "credentials.json"


def pydrive2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pydrive2") is not None


def read_credentials(path: Path) -> dict[str, Any]:
    """The stored OAuth credentials; a clear error when missing or not a user's."""
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise TargetUnavailableError(
            f"no Google Drive credentials at {path}", hint=AUTH_HINT
        ) from None
    except (OSError, ValueError) as e:
        raise TargetUnavailableError(f"cannot read {path}: {e}", hint=AUTH_HINT) from e
    if not isinstance(data, dict):
        raise TargetUnavailableError(f"{path} is not a credentials file", hint=AUTH_HINT)
    creds: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    if creds.get("type") == "service_account":
        raise TargetUnavailableError(
            f"{path} holds a service account key: a service account cannot own files in a "
            "personal Drive (Google gives it no storage quota), and Colab runs as you",
            hint=AUTH_HINT,
        )
    if not creds.get("refresh_token"):
        raise TargetUnavailableError(f"{path} has no refresh token", hint=AUTH_HINT)
    return creds


@dataclass(frozen=True)
class DriveFile:
    id: str
    title: str
    mime_type: str
    size: int
    md5: str
    modified_ns: int
    trashed: bool = False
    description: str = ""

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME


def _file(meta: dict[str, Any]) -> DriveFile:
    stamp = str(meta.get("modifiedDate") or "1970-01-01T00:00:00.000Z")
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        modified_ns = int(when.timestamp() * 1_000_000) * 1000
    except ValueError:
        modified_ns = 0
    labels: dict[str, Any] = meta.get("labels") or {}
    return DriveFile(
        id=str(meta["id"]),
        title=str(meta.get("title", "")),
        mime_type=str(meta.get("mimeType", "")),
        size=int(meta.get("fileSize") or 0),
        md5=str(meta.get("md5Checksum") or ""),
        modified_ns=modified_ns,
        trashed=bool(labels.get("trashed", False)),
        description=str(meta.get("description") or ""),
    )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class Drive:
    """One user's Drive. Not thread-safe (pydrive2's service object is not)."""

    def __init__(self, home: Path, retry_s: float | None = None) -> None:
        self.home = home
        self.retry_s = settings.seconds("LAUNCH_COLAB_RETRY_S", default=retry_s or 1.0)
        self._drive: Any = None
        self._http: Any = None

    # ---- the connection ---------------------------------------------------------------------

    def _gdrive(self) -> Any:
        if self._drive is None:
            if not pydrive2_installed():
                raise TargetUnavailableError(
                    "the colab target needs pydrive2, which is not installed", hint=INSTALL_HINT
                )
            from oauth2client.client import OAuth2Credentials  # pyright: ignore[reportMissingTypeStubs]
            from pydrive2.auth import GoogleAuth  # pyright: ignore[reportMissingTypeStubs]
            from pydrive2.drive import GoogleDrive  # pyright: ignore[reportMissingTypeStubs]

            creds = read_credentials(credentials_path(self.home))
            url = drive_url()
            if url is not None:
                point_pydrive2_at(url)
            settings = {
                "client_config_backend": "settings",
                "client_config": {
                    "client_id": creds.get("client_id", ""),
                    "client_secret": creds.get("client_secret", ""),
                },
                "save_credentials": False,
                "get_refresh_token": True,
            }
            gauth = GoogleAuth(settings=settings)
            gauth.credentials = OAuth2Credentials.from_json(json.dumps(creds))  # pyright: ignore[reportUnknownMemberType]
            self._drive = GoogleDrive(gauth)
        self._fresh()
        return self._drive

    def _fresh(self) -> None:
        """Refresh an expired access token ourselves: pydrive2 would start a browser flow."""
        gauth = self._drive.auth
        if gauth.access_token_expired:
            try:
                gauth.Refresh()
            except Exception as e:  # noqa: BLE001 - pydrive2 raises its own and oauth2client's
                raise TargetUnavailableError(
                    f"Google refused to refresh the Drive credentials: {e}", hint=AUTH_HINT
                ) from e
        if gauth.service is None:
            gauth.Authorize()

    def _call(self, what: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T | None:
        """Run one Drive request: retried on rate limits and server errors; None for a file
        that is not there when `missing_ok`."""
        from httplib2 import HttpLib2Error  # pyright: ignore[reportMissingTypeStubs]
        from pydrive2.files import ApiRequestError, FileNotUploadedError  # pyright: ignore[reportMissingTypeStubs]

        attempts = 6
        for n in range(attempts):
            self._gdrive()
            try:
                return fn()
            except ApiRequestError as e:
                error: dict[str, Any] = e.error or {}  # pyright: ignore[reportUnknownMemberType]
                code = int(error.get("code") or 0)
                reason = str(e.GetField("reason"))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
                if code == 404 and missing_ok:
                    return None
                retry = code in (429, 500, 502, 503, 504) or reason in _RETRY_REASONS
                if not retry or n == attempts - 1:
                    message = str(error.get("message") or e)
                    if reason == "storageQuotaExceeded":
                        raise TargetUnavailableError(
                            f"Drive refused to {what}: {message}", hint=AUTH_HINT
                        ) from e
                    raise TargetError(
                        f"Drive could not {what}: {message} ({code} {reason})"
                    ) from e
            except FileNotUploadedError as e:
                raise TargetError(f"Drive could not {what}: {e}") from e
            except (OSError, HttpLib2Error) as e:  # offline, refused, reset, timed out
                if n == attempts - 1:
                    raise TargetError(f"Drive could not {what}: {e}") from e
            time.sleep(min(30.0, self.retry_s * 2**n))
        raise AssertionError("unreachable")

    # ---- files and folders ------------------------------------------------------------------

    def get(self, file_id: str) -> DriveFile | None:
        def fetch() -> DriveFile:
            f = self._gdrive().CreateFile({"id": file_id})
            f.FetchMetadata()
            return _file(dict(f))

        return self._call(f"read file {file_id}", fetch, missing_ok=True)

    def children(self, folder_id: str, *, title: str | None = None) -> list[DriveFile]:
        q = f"'{_quote(folder_id)}' in parents and trashed = false"
        if title is not None:
            q += f" and title = '{_quote(title)}'"

        def fetch() -> list[DriveFile]:
            items: list[Any] = self._gdrive().ListFile({"q": q, "maxResults": 1000}).GetList()
            return [_file(dict(i)) for i in items]

        return self._call(f"list folder {folder_id}", fetch) or []

    def tree(self, folder_id: str) -> dict[str, DriveFile]:
        """Every file under a folder by its '/'-path, one listing per folder."""
        found: dict[str, DriveFile] = {}
        pending = [("", folder_id)]
        while pending:
            prefix, fid = pending.pop()
            for f in self.children(fid):
                path = f"{prefix}{f.title}"
                if f.is_folder:
                    pending.append((f"{path}/", f.id))
                elif path not in found or f.modified_ns > found[path].modified_ns:
                    found[path] = f  # a duplicate title: the newest is the one written last
        return found

    def create_folder(self, title: str, parent: str, description: str = "") -> str:
        meta = {"title": title, "mimeType": FOLDER_MIME, "parents": [{"id": parent}]}
        if description:
            meta["description"] = description

        def make() -> str:
            f = self._gdrive().CreateFile(meta)
            f.Upload()
            return str(f["id"])

        made = self._call(f"create folder {title}", make)
        assert made is not None
        return made

    def upload(self, parent: str, title: str, source: Path | bytes, mime: str) -> DriveFile:
        """A new file in `parent` (one resumable upload, as pydrive2 does)."""

        def send() -> DriveFile:
            f = self._gdrive().CreateFile(
                {"title": title, "parents": [{"id": parent}], "mimeType": mime}
            )
            if isinstance(source, Path):
                f.SetContentFile(str(source))
            else:
                f.content = io.BytesIO(source)
            f.Upload()
            return _file(dict(f))

        sent = self._call(f"upload {title}", send)
        assert sent is not None
        return sent

    def update(self, file_id: str, data: bytes) -> None:
        """New content for an existing file."""

        def send() -> None:
            f = self._gdrive().CreateFile({"id": file_id})
            f.content = io.BytesIO(data)
            f.Upload()

        self._call(f"update file {file_id}", send)

    def set_description(self, file_id: str, text: str) -> None:
        def send() -> None:
            f = self._gdrive().CreateFile({"id": file_id})
            f["description"] = text
            f.Upload()  # metadata only: a PATCH

        self._call(f"describe {file_id}", send, missing_ok=True)

    def trash(self, file_id: str) -> None:
        def send() -> None:
            self._gdrive().CreateFile({"id": file_id}).Trash()

        self._call(f"move {file_id} to the trash", send, missing_ok=True)

    # ---- content ----------------------------------------------------------------------------

    def _authorised_http(self) -> Any:
        if self._http is None:
            self._http = self._gdrive().auth.Get_Http_Object()
        self._fresh()
        return self._http

    def _media_url(self, file_id: str) -> str:
        service = self._gdrive().auth.service
        return f"{service._baseUrl}files/{file_id}?alt=media"  # pyright: ignore[reportUnknownMemberType]

    def read_range(self, file_id: str, start: int, end: int | None = None) -> bytes:
        """Bytes [start, end] of a file (to its end when `end` is None); b"" past its end."""
        want = f"bytes={start}-{'' if end is None else end}"

        def fetch() -> bytes:
            http = self._authorised_http()
            resp, body = http.request(self._media_url(file_id), "GET", headers={"Range": want})
            status = int(resp.status)
            if status == 416:
                return b""
            if status not in (200, 206):
                from googleapiclient.errors import HttpError  # pyright: ignore[reportMissingTypeStubs]
                from pydrive2.files import ApiRequestError  # pyright: ignore[reportMissingTypeStubs]

                raise ApiRequestError(HttpError(resp, body))
            data = bytes(body)
            return data[start:] if status == 200 and start else data

        return self._call(f"read file {file_id}", fetch) or b""

    def read_all(self, file_id: str) -> bytes:
        return self.read_range(file_id, 0)

    @contextmanager
    def open(self, f: DriveFile, verified: set[str] | None = None) -> Generator[BinaryIO]:
        """A reader of one file, in CHUNK-sized ranged GETs; checked against Drive's size and
        md5 when read to its end (its id then goes into `verified`)."""
        from launcher.targets.colab.tree import Reader

        yield Reader(self, f, verified)  # pyright: ignore[reportReturnType]
