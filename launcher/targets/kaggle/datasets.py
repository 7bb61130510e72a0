"""Private datasets a run needs: the job's bundle (reused while unchanged) and the run's state.

The bundle dataset (`launch-bundle-<job>`) is a cache shared by the job's runs: its file is named
after the bundle's sha256 (`bundle-<digest>.tar.gz`), so whether the current version already holds
this bundle is read from Kaggle itself, on any machine. A changed bundle becomes a new version;
kernels pin the version they were pushed with. The state dataset (`launch-state-<run>`) carries
checkpoints, outputs and logs from one session to the next, a new version per session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.errors import TargetError
from launcher.targets.base import Ledger
from launcher.targets.kaggle.client import KaggleClient, KaggleNotFoundError, rows
from launcher.targets.kaggle.handle import KaggleHandle

READY_TIMEOUT_S = 600.0  # Kaggle processes a new version before kernels can mount it


def _get(client: KaggleClient, owner: str, slug: str) -> dict[str, Any] | None:
    try:
        return client.call("datasets", "get_dataset", {"ownerSlug": owner, "datasetSlug": slug})
    except KaggleNotFoundError:
        return None


def _checked(resp: dict[str, Any], what: str) -> None:
    if str(resp.get("status") or "").lower() != "ok":
        raise TargetError(f"Kaggle refused {what}: {resp.get('error') or resp}")


def _new_version(client: KaggleClient, owner: str, slug: str, path: Path, name: str) -> None:
    token = client.upload_blob(path, name)
    resp = client.call(
        "datasets",
        "create_dataset_version",
        {
            "ownerSlug": owner,
            "datasetSlug": slug,
            "body": {"versionNotes": f"launch: {name}", "files": [{"token": token}]},
        },
    )
    _checked(resp, f"a new version of {owner}/{slug}")


def _create(
    client: KaggleClient, owner: str, slug: str, title: str, path: Path, name: str
) -> None:
    token = client.upload_blob(path, name)
    resp = client.call(
        "datasets",
        "create_dataset",
        {
            "ownerSlug": owner,
            "slug": slug,
            "title": title,
            "licenseName": "unknown",
            "isPrivate": True,
            "files": [{"token": token}],
        },
    )
    _checked(resp, f"the dataset {owner}/{slug}")


def _ready_version(client: KaggleClient, owner: str, slug: str) -> int:
    """Wait until Kaggle has processed the dataset; its current version number."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    body = {"ownerSlug": owner, "datasetSlug": slug}
    while True:
        status = str(client.call("datasets", "get_dataset_status", body).get("status") or "")
        if status.upper() == "READY":
            break
        if status.upper() in ("FAILED", "DELETED") or time.monotonic() > deadline:
            raise TargetError(f"Kaggle could not process the dataset {owner}/{slug}: {status}")
        time.sleep(2.0)
    info = _get(client, owner, slug) or {}
    return int(info.get("currentVersionNumber") or 1)


def ensure_dataset(
    client: KaggleClient,
    owner: str,
    slug: str,
    path: Path,
    name: str,
    ledger: Ledger,
    *,
    title: str,
    notify: Callable[[str], None],
) -> str:
    """The bundle dataset holding `name`, uploaded only when its current version lacks it;
    "owner/slug/versions/N" of the version that has it."""
    ref = f"{owner}/{slug}"
    info = _get(client, owner, slug)
    if info is None:
        # a cache shared by the job's runs: released from this run, kept on Kaggle
        ticket = ledger.intent("dataset", ref, {"shared": True, "role": "bundle"})
        _create(client, owner, slug, title, path, name)
        ledger.created(ticket, native_id=ref)
        notify(f"uploaded the bundle as private dataset {ref}")
    else:
        files = client.call(
            "datasets", "list_dataset_files", {"ownerSlug": owner, "datasetSlug": slug}
        )
        have = {str(f.get("name") or "") for f in rows(files, "datasetFiles")}
        if name in have:
            version = int(info.get("currentVersionNumber") or 1)
            notify(f"bundle unchanged: reusing dataset {ref} version {version}")
            return f"{ref}/versions/{version}"
        _new_version(client, owner, slug, path, name)
        notify(f"the code changed: uploaded a new version of dataset {ref}")
    return f"{ref}/versions/{_ready_version(client, owner, slug)}"


def upload_state(client: KaggleClient, h: KaggleHandle, archive: Path, ledger: Ledger) -> int:
    """The run's state dataset, created or given a new version holding `archive`; the version."""
    if h.state_version == 0:
        ref = f"{h.owner}/{h.state_slug}"
        ticket = ledger.intent("dataset", ref, {"role": "state"})
        title = f"launch state {h.run_id}"[:50]
        _create(client, h.owner, h.state_slug, title, archive, archive.name)
        ledger.created(ticket, native_id=ref)
    else:
        _new_version(client, h.owner, h.state_slug, archive, archive.name)
    return _ready_version(client, h.owner, h.state_slug)


def delete_dataset(client: KaggleClient, owner: str, slug: str) -> None:
    """Silent when it is already gone."""
    try:
        client.call("datasets", "delete_dataset", {"ownerSlug": owner, "datasetSlug": slug})
    except KaggleNotFoundError:
        pass
