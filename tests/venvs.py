"""Cached virtualenvs for tests whose packages cannot share the project venv (the vastai and
kaggle CLIs, TensorFlow, MediaPipe with numpy<2...).

One helper, so every such environment is built the same way: keyed by what is installed and the
interpreter, built once per machine under ``$LAUNCH_CACHE/test-venvs/<name>-<key>``, created in a
temporary folder and renamed into place when complete (an interrupted build never looks ready),
and a failed install fails the test with pip's own words, never a skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

import pytest


def cache_root() -> Path:
    return Path(os.environ.get("LAUNCH_CACHE", Path.home() / ".cache" / "launch"))


def cached_venv(
    name: str,
    packages: Sequence[str] = (),
    *,
    requirements: Path | None = None,
    what: str = "",
) -> Path:
    """The python of a virtualenv with `packages` and/or `requirements` installed.

    `what` names the packages in the failure message (e.g. "tensorflow-cpu from PyPI").
    """
    h = hashlib.sha256(sys.version.encode())
    for pkg in packages:
        h.update(pkg.encode() + b"\0")
    if requirements is not None:
        h.update(requirements.read_bytes())
    env_dir = cache_root() / "test-venvs" / f"{name}-{h.hexdigest()[:12]}"
    python = env_dir / "bin" / "python"
    if (env_dir / ".ready").exists() and python.exists():
        return python
    tmp = env_dir.with_name(f"{env_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, symlinks=True).create(tmp)
    args = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *packages]
    if requirements is not None:
        args += ["-r", str(requirements)]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(
            f"could not build the {name} test virtualenv ({what or ' '.join(packages)}); "
            f"pip said:\n{proc.stderr[-3000:]}",
            pytrace=False,
        )
    (tmp / ".ready").touch()
    shutil.rmtree(env_dir, ignore_errors=True)
    # bin/python is a symlink to the base interpreter and pip writes relative paths in
    # RECORD, so renaming the finished folder is safe for everything the tests run
    tmp.rename(env_dir)
    return python
