"""The process runtime: the agent as a plain subprocess in a cached virtualenv.

For machines without a docker engine (a GPU box under the desk, a CI runner). The virtualenv is
keyed by the image's requirements.txt, so the same job gets the same packages it would get in its
image, and a second run reuses the environment.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from collections.abc import Mapping
from pathlib import Path

from launcher.errors import SubmitError, TargetError
from launcher.runs import process_start


def _has_requirements(req: Path | None) -> bool:
    if req is None or not req.is_file():
        return False
    lines = (ln.strip() for ln in req.read_text().splitlines())
    return any(ln and not ln.startswith("#") for ln in lines)


def ensure_env(home: Path, requirements: Path | None) -> Path:
    """A virtualenv with the requirements installed; returns its python. Reused when it exists."""
    h = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    needs_pip = _has_requirements(requirements)
    if needs_pip:
        assert requirements is not None
        h.update(requirements.read_bytes())
    env_dir = home / "envs" / h.hexdigest()[:16]
    python = env_dir / "bin" / "python"
    if (env_dir / ".launch-ready").exists():
        return python
    tmp = env_dir.with_name(env_dir.name + f".tmp{os.getpid()}")
    # --system-site-packages lets a GPU box reuse its installed CUDA frameworks instead of
    # downloading gigabytes again; requirements still pin what the job declares.
    venv.EnvBuilder(with_pip=needs_pip, system_site_packages=True, symlinks=True).create(tmp)
    if needs_pip:
        assert requirements is not None
        proc = subprocess.run(
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise TargetError(
                f"installing {requirements} into the job's virtualenv failed:\n"
                + proc.stderr[-2000:]
            )
    (tmp / ".launch-ready").touch()
    try:
        tmp.rename(env_dir)
    except OSError:
        # another launcher finished the same env first; use theirs
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return python


_start_ticks = process_start  # the process start time: tells a live pid from a reused one


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def spawn(
    python: Path, agent: Path, root: Path, config: Path, env: Mapping[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the agent detached (own session, survives the launcher). Returns (proc, start id).

    The caller never waits on it: a launcher that exits leaves it running, and init reaps it.
    While the caller lives it passes the Popen to `alive()`, which treats a zombie as dead.
    """
    out = open(root / "agent.out", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [str(python), str(agent), "--root", str(root), "--config", str(config)],
            cwd=root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        raise SubmitError(f"could not start the agent: {e}") from e
    finally:
        out.close()
    return proc, _start_ticks(proc.pid) or ""


def alive(pid: int, ticks: str, child: subprocess.Popen[bytes] | None = None) -> bool:
    if child is not None and child.poll() is not None:
        return False
    state = _state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return not ticks or _start_ticks(pid) == ticks


def signal_group(
    pid: int, ticks: str, sig: signal.Signals, child: subprocess.Popen[bytes] | None = None
) -> None:
    """Signal the agent's process group, only if it is still the process we started."""
    if not alive(pid, ticks, child):
        return
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
