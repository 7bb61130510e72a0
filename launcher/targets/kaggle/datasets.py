"""Private datasets a run needs: the job's bundle (reused while unchanged) and an attempt's state.

The bundle dataset (`launch-bundle-<job>`) is a cache shared by the job's runs: its file is named
after the bundle's sha256 (`bundle-<digest>.tar.gz`), so whether the current version already holds
this bundle is read from Kaggle itself, on any machine. A changed bundle becomes a new version;
kernels pin the version they were pushed with. A state dataset (`launch-state-<run>-a<N>`) carries
the checkpoints and outputs a resumed attempt starts from; it belongs to that attempt and is
deleted with its kernel. A local input folder (`launch-input-<job>-<name>`) is packed here once
per content and kept like the bundle: a new version only when the folder changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from launcher.errors import TargetError
from launcher.inputs import pack_folder
from launcher.targets.base import Ledger
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle.client import KaggleClient
from launcher.targets.kaggle.handle import PackedInput

READY_TIMEOUT_S = 600.0  # Kaggle processes a new version before kernels can mount it


def _ready_version(client: KaggleClient, owner: str, slug: str) -> int:
    """Wait until Kaggle has processed the dataset; its current version number."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = client.dataset_status(owner, slug)
        if status == "READY":
            break
        if status in ("FAILED", "DELETED") or time.monotonic() > deadline:
            raise TargetError(f"Kaggle could not process the dataset {owner}/{slug}: {status}")
        time.sleep(2.0)
    info = client.dataset(owner, slug)
    return info.version if info is not None else 1


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
    what: str = "bundle",
) -> str:
    """The dataset holding `name` (the bundle, or a packed input), uploaded only when its
    current version lacks it; "owner/slug/versions/N" of the version that has it."""
    ref = f"{owner}/{slug}"
    info = client.dataset(owner, slug)
    if info is None:
        # a cache shared by the job's runs: released from this run, kept on Kaggle
        ticket = ledger.intent("dataset", ref, {"shared": True, "role": what})
        client.create_dataset(owner, slug, title, client.upload_blob(path, name))
        ledger.created(ticket, native_id=ref)
        notify(f"uploaded the {what} as private dataset {ref}")
    else:
        if name in client.dataset_files(owner, slug):
            notify(f"{what} unchanged: reusing dataset {ref} version {info.version}")
            return f"{ref}/versions/{info.version}"
        client.create_dataset_version(
            owner, slug, client.upload_blob(path, name), f"launch: {name}"
        )
        changed = "the code" if what == "bundle" else f"the {what}"
        notify(f"{changed} changed: uploaded a new version of dataset {ref}")
    return f"{ref}/versions/{_ready_version(client, owner, slug)}"


def pack_input(home: Path, job: str, name: str, folder: Path) -> PackedInput:
    """`folder` packed once per content (launcher/inputs.py), for the private dataset that
    carries it to the kernel."""
    packed = pack_folder(home, folder)
    return PackedInput(
        name=name,
        slug=names.input_slug(job, name),
        archive=str(packed.archive),
        file=packed.file,
        sha256=packed.sha256,
    )


def upload_state(
    client: KaggleClient, owner: str, slug: str, title: str, archive: Path, ledger: Ledger
) -> int:
    """A new state dataset holding `archive` (the ledger hears of it first); its version."""
    ref = f"{owner}/{slug}"
    ticket = ledger.intent("dataset", ref, {"role": "state"})
    client.create_dataset(owner, slug, title[:50], client.upload_blob(archive, archive.name))
    ledger.created(ticket, native_id=ref)
    return _ready_version(client, owner, slug)
