"""Datasets: create and version from uploaded blobs; each version is a folder kernels mount.

Requests and answers are those the CLI sends and reads (reference §1.3 and §1.4):
`GetDatasetStatus` (any HTTP error means "the slug is free" to `datasets create`), `CreateDataset`,
`CreateDatasetVersion`, `CreateDatasetVersionById`, plus `GetDataset`, `GetDatasetMetadata` and
`ListDatasetFiles`.

`DownloadDataset` answers as Kaggle does: a redirect to the version's zip at a signed address
(here `/_emu/dataset/<token>`, served without credentials, with Range), which the CLI and the
launcher's on-machine fetcher then GET. The bytes served are counted per dataset, so a test can
see that a second run downloaded nothing.

Archives that the CLI builds from folders (`--dir-mode zip|tar`) are unpacked into a folder of the
same stem, as Kaggle does with uploaded zips (`DatabundleVersionStatus.BLOBS_DECOMPRESSED`) [the
exact rules Kaggle applies to other archive types are unverified; they are kept as files here].
"""

from __future__ import annotations

import secrets
import shutil
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from launcher.sim.kaggle.blobs import BlobStore
from launcher.sim.kaggle.rpc import WEB, RpcError


@dataclass
class DatasetVersion:
    number: int
    notes: str
    path: Path
    created: float


@dataclass
class Dataset:
    id: int
    owner: str
    slug: str
    title: str
    license_name: str
    is_private: bool
    subtitle: str | None = None
    description: str | None = None
    versions: list[DatasetVersion] = field(default_factory=list[DatasetVersion])

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    def version(self, number: int | None) -> DatasetVersion | None:
        if number is None:
            return self.versions[-1] if self.versions else None
        return next((v for v in self.versions if v.number == number), None)


def _iso(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def _unpack(archive: Path, dest: Path) -> bool:
    """Unpack a .zip or .tar into ``dest``; False when it is not one (kept as a file)."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip") and zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
            return True
        if name.endswith(".tar") and tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
            return True
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return False
    return False


class DatasetStore:
    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self._root = root
        self._blobs = blobs
        self._datasets: dict[tuple[str, str], Dataset] = {}
        self._lock = threading.Lock()
        self._next_id = 2001
        self._links: dict[str, DatasetVersion] = {}  # signed download token -> version
        self.served: dict[str, int] = {}  # "owner/slug" -> archive bytes sent

    # -- downloads --------------------------------------------------------------------------

    def download_link(self, user: str, body: dict[str, Any]) -> str:
        """DownloadDataset: the path of a signed, credential-free link to the version's zip."""
        ds = self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        version = ds.version(body.get("datasetVersionNumber"))
        if version is None:
            raise RpcError(404, "Not found")
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._links[token] = version
        return f"/_emu/dataset/{token}/{ds.slug}.zip"

    def archive(self, token: str) -> tuple[str, Path] | None:
        """(owner/slug, the zip) for a signed link; the zip is built once per version."""
        with self._lock:
            version = self._links.get(token)
        if version is None:
            return None
        ref = "/".join(version.path.parts[-3:-1])
        zipped = version.path.with_name(version.path.name + ".zip")
        with self._lock:
            if not zipped.exists():
                tmp = zipped.with_name(zipped.name + ".tmp")
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in sorted(version.path.rglob("*")):
                        if p.is_file():
                            zf.write(p, p.relative_to(version.path).as_posix())
                tmp.replace(zipped)
        return ref, zipped

    def count_served(self, ref: str, sent: int) -> None:
        with self._lock:
            self.served[ref] = self.served.get(ref, 0) + sent

    # -- lookups used by kernels ------------------------------------------------------------

    def find(self, owner: str, slug: str) -> Dataset | None:
        with self._lock:
            return self._datasets.get((owner.lower(), slug.lower()))

    def visible(self, user: str, owner: str, slug: str) -> Dataset:
        ds = self.find(owner, slug)
        if ds is None or (ds.is_private and ds.owner.lower() != user.lower()):
            raise RpcError(404, "Not found")
        return ds

    def seed(self, owner: str, slug: str, folder: Path, *, is_private: bool = False) -> Dataset:
        """A dataset that already exists on Kaggle (as a test's fixture): a new version of
        `owner/slug` holding a copy of `folder`."""
        with self._lock:
            ds = self._datasets.get((owner.lower(), slug.lower()))
            if ds is None:
                ds = Dataset(self._next_id, owner, slug, slug, "CC0-1.0", is_private)
                self._next_id += 1
                self._datasets[(owner.lower(), slug.lower())] = ds
            number = (ds.versions[-1].number + 1) if ds.versions else 1
            dest = self._root / ds.owner / ds.slug / f"v{number}"
            shutil.copytree(folder, dest)
            ds.versions.append(DatasetVersion(number, "seeded", dest, time.time()))
        return ds

    # -- RPCs -------------------------------------------------------------------------------

    def get_status(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        return {"status": "READY"}

    def create(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        owner = body.get("ownerSlug") or user
        slug = body.get("slug") or ""
        if owner.lower() != user.lower():
            raise RpcError(403, f"user {user} cannot create datasets for {owner}")
        if not slug:
            return {"status": "error", "error": "a dataset slug is required"}
        files = self._take_files(body.get("files") or [])
        with self._lock:
            key = (owner.lower(), slug.lower())
            if key in self._datasets:
                return {
                    "status": "error",
                    "error": f'The requested slug "{slug}" is already in use by a dataset.',
                }
            ds = Dataset(
                id=self._next_id,
                owner=owner,
                slug=slug,
                title=body.get("title") or slug,
                license_name=body.get("licenseName") or "unknown",
                is_private=bool(body.get("isPrivate", False)),
                subtitle=body.get("subtitle"),
                description=body.get("description"),
            )
            self._next_id += 1
            self._datasets[key] = ds
        self._add_version(ds, "Initial release", files)
        return self._ok(ds)

    def create_version(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.find(body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        return self._version(user, ds, body.get("body") or {})

    def create_version_by_id(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ds = next((d for d in self._datasets.values() if d.id == body.get("id")), None)
        return self._version(user, ds, body.get("body") or {})

    def get(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        current = ds.version(None)
        return {
            "id": ds.id,
            "ref": ds.ref,
            "title": ds.title,
            "subtitle": ds.subtitle,
            "url": f"{WEB}/datasets/{ds.ref}",
            "isPrivate": ds.is_private,
            "licenseName": ds.license_name,
            "ownerRef": ds.owner,
            "currentVersionNumber": current.number if current else None,
            "lastUpdated": _iso(current.created) if current else None,
            "versions": [
                {
                    "versionNumber": v.number,
                    "versionNotes": v.notes,
                    "creationDate": _iso(v.created),
                }
                for v in ds.versions
            ],
        }

    def metadata(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """GetDatasetMetadata (`datasets download` reads the licenses from it)."""
        ds = self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        info = {
            "datasetId": ds.id,
            "datasetSlug": ds.slug,
            "ownerUser": ds.owner,
            "title": ds.title,
            "subtitle": ds.subtitle,
            "description": ds.description,
            "isPrivate": ds.is_private,
            "licenses": [{"name": ds.license_name}],
        }
        return {"info": info}

    def list_files(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        version = ds.version(body.get("datasetVersionNumber"))
        if version is None:
            raise RpcError(404, "Not found")
        files = [
            {
                "ref": f"{ds.ref}/{p.relative_to(version.path).as_posix()}",
                "datasetRef": ds.ref,
                "name": p.relative_to(version.path).as_posix(),
                "totalBytes": p.stat().st_size,
                "creationDate": _iso(version.created),
            }
            for p in sorted(version.path.rglob("*"))
            if p.is_file()
        ]
        return {"datasetFiles": files}

    def delete(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.visible(user, body.get("ownerSlug", ""), body.get("datasetSlug", ""))
        if ds.owner.lower() != user.lower():
            raise RpcError(403, f"user {user} cannot delete {ds.ref}")
        with self._lock:
            self._datasets.pop((ds.owner.lower(), ds.slug.lower()), None)
        return {}

    # -- internals --------------------------------------------------------------------------

    def _version(self, user: str, ds: Dataset | None, body: dict[str, Any]) -> dict[str, Any]:
        if ds is None or (ds.is_private and ds.owner.lower() != user.lower()):
            raise RpcError(404, "Not found")
        if ds.owner.lower() != user.lower():
            raise RpcError(403, f"user {user} cannot version {ds.ref}")
        files = self._take_files(body.get("files") or [])
        if body.get("deleteOldVersions"):
            for old in ds.versions:
                shutil.rmtree(old.path, ignore_errors=True)
            ds.versions = []
        if body.get("subtitle"):
            ds.subtitle = body["subtitle"]
        if body.get("description"):
            ds.description = body["description"]
        self._add_version(ds, body.get("versionNotes") or "", files)
        return self._ok(ds)

    def _take_files(self, files: list[dict[str, Any]]) -> list[tuple[str, Path]]:
        taken: list[tuple[str, Path]] = []
        for f in files:
            blob = self._blobs.get(str(f.get("token", "")))
            if blob is None or not blob.complete:
                raise RpcError(400, f"upload {f.get('token')!r} is unknown or incomplete")
            taken.append((blob.name, blob.path))
        return taken

    def _add_version(self, ds: Dataset, notes: str, files: list[tuple[str, Path]]) -> None:
        with self._lock:
            number = (ds.versions[-1].number + 1) if ds.versions else 1
            dest = self._root / ds.owner / ds.slug / f"v{number}"
            dest.mkdir(parents=True, exist_ok=True)
            for name, src in files:
                if not _unpack(src, dest / Path(name).name.rsplit(".", 1)[0]):
                    shutil.copyfile(src, dest / name)
            ds.versions.append(DatasetVersion(number, notes, dest, time.time()))

    @staticmethod
    def _ok(ds: Dataset) -> dict[str, Any]:
        return {"ref": ds.ref, "url": f"{WEB}/datasets/{ds.ref}", "status": "Ok"}
