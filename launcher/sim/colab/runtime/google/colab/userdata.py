"""`google.colab.userdata`: the notebook's secrets, from the file COLAB_SIM_SECRETS names.

That file ({"NAME": "value", ...}, or {"NAME": null} for a secret without notebook access) is
what the user put in Colab's Secrets panel; like Colab, a missing name and a name the notebook may
not read raise different errors.
"""

from __future__ import annotations

import json
import os
from typing import Any


class SecretNotFoundError(Exception):
    pass


class NotebookAccessError(Exception):
    pass


def get(key: str) -> str:
    path = os.environ.get("COLAB_SIM_SECRETS", "")
    try:
        with open(path, encoding="utf-8") as f:
            secrets: Any = json.load(f)
    except (OSError, ValueError):
        secrets = {}
    if not isinstance(secrets, dict) or key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    value: Any = secrets[key]  # pyright: ignore[reportUnknownVariableType]
    if value is None:
        raise NotebookAccessError(f"Notebook does not have access to secret {key}")
    return str(value)  # pyright: ignore[reportUnknownArgumentType]
