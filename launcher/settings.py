"""Every `LAUNCH_*` environment setting the launcher reads, in one table, with typed accessors.

A setting of the wrong form is the user's to fix, so it must say which variable, what it holds
and what it should hold, in one line, before anything starts: `validate_all()` is called once
by the CLI ahead of every command, and each accessor checks again where the value is used (the
Python API has no CLI in front of it). An unset or blank variable means the default everywhere,
as it did before this table.

Not here: the variables the launcher *sets* for a job (LAUNCH_INPUT_DIR, LAUNCH_OUTPUT_DIR,
LAUNCH_RESUME_FROM...; read by launcher/agent.py and launchkit.py inside the job) and the
platforms' own (VAST_API_KEY, KAGGLE_*), which their own tools define.

Stdlib only and no work at import: the CLI imports this before each command.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from launcher.errors import SettingError


class Kind(str, Enum):
    URL = "url"
    SECONDS = "seconds"
    COUNT = "count"
    FOLDER = "folder"
    FILE = "file"
    REGISTRY = "registry"
    FLAG = "flag"
    TEXT = "text"  # free-form: nothing to check


EXPECTED: dict[Kind, str] = {
    Kind.URL: "a URL starting with http:// or https:// (e.g. http://127.0.0.1:8765)",
    Kind.SECONDS: "a number of seconds > 0 (e.g. 5 or 0.5)",
    Kind.COUNT: "a whole number >= 1 (e.g. 6)",
    Kind.FOLDER: "a folder path (e.g. ~/launch)",
    Kind.FILE: "a file path (e.g. ~/colab-credentials.json)",
    Kind.REGISTRY: "host[:port]/prefix (e.g. ghcr.io/you or 127.0.0.1:5000/lab)",
    Kind.FLAG: "1, true, yes or on (0, false, no or off to turn it off)",
    Kind.TEXT: "any text",
}

_FLAG_ON = frozenset({"1", "true", "yes", "on"})
_FLAG_OFF = frozenset({"0", "false", "no", "off"})
# Docker's reference grammar (distribution/reference): a registry host with an optional port,
# then lowercase path components; a scheme or an upper-case letter makes every push fail later
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = re.compile(rf"^{_HOST}(?:/{_COMPONENT})+$")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    what: str  # what it changes, for the table's reader

    @property
    def expected(self) -> str:
        return EXPECTED[self.kind]


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("LAUNCH_HOME", Kind.FOLDER, "the run store [default: ~/.local/share/launch]"),
        Setting("LAUNCH_INPUT_CACHE", Kind.FOLDER, "downloaded inputs [~/.cache/launch/inputs]"),
        Setting("LAUNCH_REGISTRY", Kind.REGISTRY, "where images built here are pushed"),
        Setting("LAUNCH_BASE_IMAGE", Kind.TEXT, "the BASE_IMAGE of image builds"),
        Setting("LAUNCH_PIP_EXTRA_ARGS", Kind.TEXT, "extra pip arguments of image builds"),
        Setting("LAUNCH_NO_PROBE", Kind.FLAG, "`launch plan` asks no source for input sizes"),
        Setting("LAUNCH_FINAL_PULL_S", Kind.SECONDS, "retries of a run's last pull [300]"),
        Setting("LAUNCH_VAST_URL", Kind.URL, "the Vast.ai API [https://console.vast.ai]"),
        Setting("LAUNCH_KAGGLE_URL", Kind.URL, "the Kaggle API [https://api.kaggle.com]"),
        Setting("LAUNCH_KAGGLE_POLL_S", Kind.SECONDS, "how often Kaggle is asked [5]"),
        Setting("LAUNCH_KAGGLE_RETRY_S", Kind.SECONDS, "first backoff of Kaggle retries [1]"),
        Setting("LAUNCH_KAGGLE_ATTEMPTS", Kind.COUNT, "tries of each Kaggle call [6]"),
        Setting("LAUNCH_COLAB_URL", Kind.URL, "where Colab notebooks open [Google's]"),
        Setting("LAUNCH_COLAB_POLL_S", Kind.SECONDS, "how often the notebook is read [5]"),
        Setting("LAUNCH_COLAB_RETRY_S", Kind.SECONDS, "first backoff of Drive retries [1]"),
        Setting("LAUNCH_DRIVE_URL", Kind.URL, "the Google Drive API [Google's]"),
        Setting("LAUNCH_COLAB_CREDENTIALS", Kind.FILE, "the stored Drive consent"),
        Setting("LAUNCH_COLAB_CLIENT_ID", Kind.TEXT, "the Google OAuth client of `launch auth`"),
        Setting("LAUNCH_COLAB_CLIENT_SECRET", Kind.TEXT, "its secret (never printed)"),
        Setting("LAUNCH_NO_BROWSER", Kind.FLAG, "print Colab links instead of opening them"),
    )
}


def _raw(name: str, kind: Kind) -> str | None:
    """The variable's value, stripped; None when unset or blank (the default applies)."""
    if SETTINGS[name].kind is not kind:  # a call site that disagrees with the table is a bug
        raise TypeError(f"{name} is a {SETTINGS[name].kind.value} setting, not a {kind.value}")
    value = os.environ.get(name, "").strip()
    return value or None


def _why_not(kind: Kind, value: str) -> str | None:
    """None when `value` is of `kind`; else why not, in a few words, or "" when the expected
    form says it all."""
    if kind is Kind.SECONDS or kind is Kind.COUNT:
        try:
            number = float(value)
        except ValueError:
            return ""
        if not math.isfinite(number) or number <= 0:
            return ""
        if kind is Kind.COUNT and not number.is_integer():
            return ""
        return None
    if kind is Kind.URL:
        try:
            parts = urllib.parse.urlsplit(value)
        except ValueError:
            return ""
        try:
            _ = parts.port  # raises on a port that is not a number below 65536
        except ValueError:
            return "its port is not a number from 0 to 65535"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ""
        return None
    if kind is Kind.REGISTRY:
        if "://" in value:
            return "no scheme: docker names a registry by host"
        if _REGISTRY.match(value.rstrip("/")):
            return None
        if _REGISTRY.match(value.rstrip("/").lower()):
            return "docker wants the part after the host in lower case"
        return ""
    if kind is Kind.FLAG:
        return None if value.lower() in _FLAG_ON | _FLAG_OFF else ""
    if kind is Kind.FOLDER:
        path = Path(value).expanduser()
        return "it names a file" if path.exists() and not path.is_dir() else None
    if kind is Kind.FILE:
        return "it names a folder" if Path(value).expanduser().is_dir() else None
    return None


def problem(name: str) -> str | None:
    """The one line that says what is wrong with `name`'s value, or None when it is fine."""
    setting = SETTINGS[name]
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    why = _why_not(setting.kind, value)
    if why is None:
        return None
    return f"{name}={value!r}: expected {setting.expected}" + (f"; {why}" if why else "")


def validate_all() -> list[str]:
    """Every problem among the settings, one line each, in the table's order."""
    return [p for name in SETTINGS if (p := problem(name)) is not None]


def _checked(name: str, kind: Kind) -> str | None:
    value = _raw(name, kind)
    if value is not None and (line := problem(name)) is not None:
        raise SettingError([line])
    return value


def seconds(name: str, default: float) -> float:
    """A positive number of seconds, or `default` when unset."""
    value = _checked(name, Kind.SECONDS)
    return default if value is None else float(value)


def count(name: str, default: int) -> int:
    """A whole number >= 1, or `default` when unset."""
    value = _checked(name, Kind.COUNT)
    return default if value is None else int(float(value))


def url(name: str) -> str | None:
    """An http(s) URL without a trailing slash, or None when unset."""
    value = _checked(name, Kind.URL)
    return None if value is None else value.rstrip("/")


def registry(name: str) -> str | None:
    """A registry `host[:port]/prefix` without a trailing slash, or None when unset."""
    value = _checked(name, Kind.REGISTRY)
    return None if value is None else value.rstrip("/")


def folder(name: str) -> Path | None:
    """A folder path, `~` expanded (it need not exist yet), or None when unset."""
    value = _checked(name, Kind.FOLDER)
    return None if value is None else Path(value).expanduser()


def file(name: str) -> Path | None:
    """A file path, `~` expanded (it need not exist yet), or None when unset."""
    value = _checked(name, Kind.FILE)
    return None if value is None else Path(value).expanduser()


def flag(name: str) -> bool:
    """Whether the flag is on; unset is off."""
    value = _checked(name, Kind.FLAG)
    return value is not None and value.lower() in _FLAG_ON
