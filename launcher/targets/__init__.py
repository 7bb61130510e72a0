"""Lazy registry of targets: name -> "module:Class" plus an install hint.

Nothing here imports a target module: `launch --help` stays fast, and a target whose extra is not
installed fails with its hint when it is used, not silently at import (we reject dstack's
`try/except ImportError: pass` registry).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from launcher.errors import TargetUnavailableError

if TYPE_CHECKING:
    from launcher.targets.base import AnyTarget


class _Entry(NamedTuple):
    path: str
    hint: str
    available: bool = True


TARGETS: dict[str, _Entry] = {
    "local": _Entry("launcher.targets.local.target:LocalTarget", "pip install 'launch[docker]'"),
    "vast": _Entry("launcher.targets.vast.target:VastTarget", "pip install 'launch[vast]'"),
    "kaggle": _Entry(
        "launcher.targets.kaggle.target:KaggleTarget", "pip install 'launch[kaggle]'"
    ),
    "colab": _Entry("launcher.targets.colab.target:ColabTarget", "pip install 'launch[colab]'"),
}


def target_names() -> list[str]:
    return list(TARGETS)


def load_target_class(name: str) -> type[AnyTarget]:
    import difflib

    entry = TARGETS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(TARGETS)}"
        raise TargetUnavailableError(f"unknown target '{name}'", hint=hint)
    if not entry.available:
        raise TargetUnavailableError(
            f"the {name} target is not available in this version of launch",
            hint="use --target local",
        )
    module_name, _, cls_name = entry.path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TargetUnavailableError(
            f"the {name} target needs a package that is not installed ({e.name})", hint=entry.hint
        ) from e
    return getattr(module, cls_name)
