"""Kaggle's in-kernel secrets client, as the sim provides it to the kernels it runs.

On Kaggle a kernel reads the secrets its owner attached with ``kaggle_secrets.UserSecretsClient``
(in Kaggle's images only; it posts to ``$KAGGLE_URL_BASE/requests/GetUserSecretByLabelRequest``
with ``$KAGGLE_USER_SECRETS_TOKEN``). The sim's kernels cannot reach the sim on 127.0.0.1 from a
container, so they get a module with the same API that reads the owner's secrets from a read-only
file outside /kaggle/working [sim-only: every secret of the owner is visible, where Kaggle shows
a kernel only the secrets attached to it in the UI].
"""

from __future__ import annotations

import json
from pathlib import Path

MODULE = '''"""kaggle_secrets as provided by the launch Kaggle sim (same API as Kaggle's)."""

import json
import os


class CredentialError(Exception):
    pass


class BackendError(Exception):
    pass


class ValidationError(Exception):
    pass


class UserSecretsClient:
    def __init__(self):
        self._path = os.environ.get("KAGGLE_SIM_SECRETS_FILE", "")
        if not os.environ.get("KAGGLE_USER_SECRETS_TOKEN"):
            raise CredentialError(
                "A JWT Token is required to use the UserSecretsClient, but none found in "
                "environment variable KAGGLE_USER_SECRETS_TOKEN"
            )

    def get_secret(self, label):
        if not label:
            raise ValidationError("Label must be non-empty.")
        with open(self._path, encoding="utf-8") as f:
            found = json.load(f)
        if label not in found:
            raise BackendError(
                "Unexpected response from the service. Response: "
                + json.dumps({"errors": ["No user secrets exist for label " + label]})
            )
        return found[label]
'''

FILE = "user-secrets.json"


def write(lib: Path, secrets: dict[str, str]) -> None:
    """Write the module and the owner's secrets into ``lib`` (put on the kernel's PYTHONPATH)."""
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "kaggle_secrets.py").write_text(MODULE, encoding="utf-8")
    path = lib / FILE
    path.write_text(json.dumps(secrets), encoding="utf-8")
    path.chmod(0o600)
