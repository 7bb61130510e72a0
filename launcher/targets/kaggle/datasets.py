"""Private datasets a run needs: the job's bundle (reused while unchanged) and an attempt's state.

The bundle dataset (`launch-bundle-<job>`) is a cache shared by the job's runs: its file is named
after the bundle's sha256 (`bundle-<digest>.tar.gz`), so whether the current version already holds
this bundle is read from Kaggle itself, on any machine. A changed bundle becomes a new version;
kernels pin the version they were pushed with. A state dataset (`launch-state-<run>-a<N>`) carries
the checkpoints and outputs a resumed attempt starts from; it belongs to that attempt and is
deleted with its kernel. A local input folder (`launch-input-<job>-<name>`) is packed here once
per content and kept like the bundle: a new version only when the folder changed.

Kaggle's API has no partial version: `CreateDatasetVersion` names the files of the new version
by upload tokens, every one of them uploaded again (kaggle-api `datasets version` uploads the
whole folder), so a dataset's new version costs all its bytes. The bundle is therefore split in
two datasets by what changes: its files of ASSET_MIN or more (weights, sample data, wheels) ride
in `launch-assets-<job>`, the rest (code, job.json, the agent) in the bundle dataset. Editing a
script uploads the small part; the assets are uploaded again only when one of them changes.
"""

from __future__ import annotations

import gzip
import os
import secrets
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from launcher.errors import TargetError
from launcher.inputs import pack_folder
from launcher.progress import MeterFactory, human_bytes
from launcher.sync import atomic_write_text, sha256_file
from launcher.targets.base import Ledger
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle.client import KaggleClient
from launcher.targets.kaggle.handle import BundleParts, PackedInput, part_file

READY_TIMEOUT_S = 600.0  # Kaggle processes a new version before kernels can mount it
ASSET_MIN = 1 << 20  # bundle files this big go to the assets dataset


def split_bundle(bundle: Path, digest: str, home: Path) -> BundleParts:
    """`bundle` split by file size into two reproducible .tar.gz (same bundle, same bytes, on
    any machine: the members keep the bundle's normalized headers and order, gzip carries no
    name or time), made once per bundle under $LAUNCH_HOME/kaggle/bundles (reading the bundle
    means gunzipping all of it: a re-run of the same bundle reads the answer instead)."""
    folder = home / "kaggle" / "bundles" / digest[:32]
    done = folder / "parts.json"
    try:
        known = BundleParts.model_validate_json(done.read_text())
        if all(Path(part[0]).is_file() for part in (known.code, known.assets) if part):
            return known
    except (OSError, ValueError):
        pass  # not split yet, or the parts were removed: split (again)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle, "r:gz") as tar:
        members = tar.getmembers()
        big = [m for m in members if m.isreg() and m.size >= ASSET_MIN]
        if not big:
            parts = BundleParts(code=(str(bundle), digest))
        else:
            code = _subset(tar, [m for m in members if m not in big], folder)
            assets = _subset(tar, big, folder)
            parts = BundleParts(
                code=_keep(code, folder / part_file("bundle", code[1])),
                assets=_keep(assets, folder / part_file("assets", assets[1])),
            )
    atomic_write_text(done, parts.model_dump_json())
    return parts


def _subset(
    tar: tarfile.TarFile, members: list[tarfile.TarInfo], folder: Path
) -> tuple[Path, str]:
    """`members` of `tar` into a temp .tar.gz in `folder`; (its path, sha256)."""
    path = folder / f".part-{secrets.token_hex(6)}.tmp"
    try:
        with path.open("wb") as raw:
            # level 6, as the bundle: 9 costs much more time on weights that barely compress
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0
            ) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
                    for m in members:
                        out.addfile(m, tar.extractfile(m) if m.isreg() else None)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, sha256_file(path)


def _keep(made: tuple[Path, str], dest: Path) -> tuple[str, str]:
    os.replace(made[0], dest)
    return str(dest), made[1]


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
    meter: MeterFactory | None = None,
) -> str:
    """The dataset holding `name` (the bundle, or a packed input), uploaded only when its
    current version lacks it; "owner/slug/versions/N" of the version that has it."""
    ref = f"{owner}/{slug}"
    info = client.dataset(owner, slug)
    if info is None:
        # a cache shared by the job's runs: released from this run, kept on Kaggle
        ticket = ledger.intent("dataset", ref, {"shared": True, "role": what})
        client.create_dataset(owner, slug, title, _upload(client, path, name, what, meter))
        ledger.created(ticket, native_id=ref)
        notify(
            f"uploaded the {what} as private dataset {ref} ({human_bytes(path.stat().st_size)})"
        )
    else:
        if name in client.dataset_files(owner, slug):
            notify(f"{what} unchanged: reusing dataset {ref} version {info.version}")
            return f"{ref}/versions/{info.version}"
        client.create_dataset_version(
            owner, slug, _upload(client, path, name, what, meter), f"launch: {name}"
        )
        changed = "the code" if what == "bundle" else f"the {what}"
        notify(
            f"{changed} changed: uploaded a new version of dataset {ref} "
            f"({human_bytes(path.stat().st_size)})"
        )
    return f"{ref}/versions/{_ready_version(client, owner, slug)}"


def _upload(
    client: KaggleClient, path: Path, name: str, what: str, meter: MeterFactory | None
) -> str:
    progress = meter(f"upload the {what}") if meter is not None else None
    if progress is None:
        return client.upload_blob(path, name)
    progress.start(path.stat().st_size, 1)
    try:
        return client.upload_blob(path, name, advance=progress.advance)
    finally:
        progress.finish()


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
