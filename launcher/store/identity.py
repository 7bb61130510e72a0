"""This store's identity: a short random key, made once and kept beside the run database.

Names and labels the launcher gives things on a shared account (Vast instance labels, Kaggle
kernel slugs) carry it, so `launch gc` in one store frees only what that store made: two laptops,
or a laptop and a CI job, on one account never destroy each other's live runs (SkyPilot adds a
user hash to cluster names for the same reason).

Random, not a hash of the store's path (what the local docker target labels its containers with):
two laptops of one user, or every CI runner, have the same path, and so would have the same key.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

from launcher.errors import LaunchError

KEY_FILE = "store-key"
KEY_CHARS = 8  # lowercase hex: fits in a Kaggle slug beside the run id; 2^32 keeps stores apart
_KEY = re.compile(rf"[0-9a-f]{{{KEY_CHARS}}}")


class StoreKeyError(LaunchError):
    """The store's key file exists but does not hold a key."""


def is_store_key(text: str) -> bool:
    return _KEY.fullmatch(text) is not None


def store_key(home: Path) -> str:
    """The key of the store under `home`, made on first use (safe against a racing process)."""
    path = home / KEY_FILE
    key = _read(path)
    if key is None:
        home.mkdir(parents=True, exist_ok=True)
        _create(path, secrets.token_hex(KEY_CHARS // 2))
        key = _read(path)
    if key is None or not is_store_key(key):
        # never replace it: a new key would make this store's live resources another store's
        raise StoreKeyError(
            f"{path} does not hold a store key ({KEY_CHARS} hex characters): {key!r}",
            hint="restore it from a backup; deleting it gives this store a new identity, and "
            "`launch gc` then counts what the store made before as another store's",
        )
    return key


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _create(path: Path, key: str) -> None:
    """Write `key` to `path` unless it exists; a reader never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        try:
            os.link(tmp, path)  # fails if it exists: of two racing processes, the first wins
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: an exclusive create is as safe
            try:
                with open(path, "x") as f:  # a racing reader may see it empty for a moment
                    f.write(key + "\n")
            except FileExistsError:
                pass
    finally:
        os.unlink(tmp)
