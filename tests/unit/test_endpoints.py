"""An endpoint that does not answer: one line that names it and the fix, at once when nothing
listens on this machine (an emulator not started), never a green tick for the failed phase."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from launcher.endpoints import nothing_listens, reason
from tests.conftest import REPO, launch_cmd


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


@pytest.mark.parametrize(
    ("target", "env"),
    [
        ("vast", {"LAUNCH_VAST_URL": "http://127.0.0.1:{port}", "VAST_API_KEY": "k"}),
        (
            "kaggle",
            {"LAUNCH_KAGGLE_URL": "http://127.0.0.1:{port}", "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"},
        ),
    ],
)
def test_an_emulator_that_is_not_running_is_named_with_the_command_that_starts_it(
    target: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = _closed_port()
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(port=port))
    started = time.monotonic()
    proc = subprocess.run(
        [*launch_cmd(), "run", str(REPO / "jobs" / "hello.yaml"), "--target", target,
         "--profile", "smoke", "--set", "targets.vast.image=launch-base:local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 4, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], proc.stderr
    assert errors[0].endswith(": Connection refused"), proc.stderr
    assert "launch sim up" in proc.stderr and "Traceback" not in proc.stderr
    assert "urllib3" not in proc.stderr and "HTTPConnection" not in proc.stderr
    assert "✗ provisioning" in proc.stderr and "✓ provisioning" not in proc.stderr
    assert took < 10, f"a refused local port is not worth retrying ({took:.1f}s)"


def test_reason_is_the_innermost_os_error() -> None:
    try:
        try:
            socket.create_connection(("127.0.0.1", _closed_port()), timeout=2)
        except OSError as inner:
            raise RuntimeError("HTTPConnectionPool(...): Max retries exceeded") from inner
    except RuntimeError as e:
        assert reason(e) == "Connection refused"
        assert nothing_listens("http://127.0.0.1:1", e)
        assert not nothing_listens("https://api.kaggle.com", e)  # far away: worth a retry


def test_two_messages_never_run_into_one() -> None:
    """paramiko joins its message and the OS error with nothing between them."""
    from launcher.targets.vast.ssh import _said  # pyright: ignore[reportPrivateUsage]

    joined = Exception("Error reading SSH protocol banner[Errno 104] Connection reset by peer")
    assert _said(joined) == "Error reading SSH protocol banner: [Errno 104] Connection reset by peer"
    assert _said(OSError(111, "Connection refused")) == "[Errno 111] Connection refused"
