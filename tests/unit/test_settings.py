"""LAUNCH_* settings: each bad one is one line naming the variable, its value and the form
expected, up front, through the real CLI; valid values behave as before."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from launcher import settings
from launcher.cli import main
from launcher.errors import ExitStatus, SettingError
from tests.conftest import REPO, launch_cmd

# run elsewhere (inside the job, or as the emulators), never by the launcher on this machine
ELSEWHERE = ("sim/", "agent.py", "launchkit.py", "launch_fetch.py")


def _launch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`launch ARGS` in this process, through the CLI's one error funnel; (exit code, output)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("LAUNCH_KAGGLE_POLL_S", "abc", "expected a number of seconds > 0"),
        ("LAUNCH_COLAB_POLL_S", "abc", "expected a number of seconds > 0"),
        ("LAUNCH_KAGGLE_POLL_S", "-5", "expected a number of seconds > 0"),
        ("LAUNCH_COLAB_POLL_S", "0", "expected a number of seconds > 0"),
        ("LAUNCH_COLAB_RETRY_S", "nan", "expected a number of seconds > 0"),
        ("LAUNCH_KAGGLE_ATTEMPTS", "2.5", "expected a whole number >= 1"),
        ("LAUNCH_VAST_URL", "127.0.0.1:1", "expected a URL starting with http:// or https://"),
        ("LAUNCH_KAGGLE_URL", "ftp://x", "expected a URL starting with http:// or https://"),
        ("LAUNCH_DRIVE_URL", "http://127.0.0.1:99999", "its port is not a number"),
        ("LAUNCH_REGISTRY", "https://ghcr.io/you", "expected host[:port]/prefix"),
        ("LAUNCH_REGISTRY", "ghcr.io", "expected host[:port]/prefix"),
        ("LAUNCH_NO_PROBE", "maybe", "expected 1, true, yes or on"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    name: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    code, out = _launch(capsys, "ls")
    assert code == SettingError.exit_code == ExitStatus.SPEC
    first = out.splitlines()[0]
    assert first.startswith(f"error: {name}={value!r}: ") and expected in first, out
    assert "internal error" not in out and "Traceback" not in out


def test_a_folder_setting_that_names_a_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "store"
    a_file.write_text("")
    monkeypatch.setenv("LAUNCH_INPUT_CACHE", str(a_file))
    code, out = _launch(capsys, "ls")
    assert code == ExitStatus.SPEC
    assert (
        "LAUNCH_INPUT_CACHE=" in out and "expected a folder path" in out and "names a file" in out
    )


def test_several_bad_settings_give_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAUNCH_KAGGLE_POLL_S", "abc")
    monkeypatch.setenv("LAUNCH_COLAB_POLL_S", "-5")
    monkeypatch.setenv("LAUNCH_VAST_URL", "127.0.0.1:1")
    code, out = _launch(capsys, "ls")
    assert code == ExitStatus.SPEC
    assert out.startswith("error: 3 environment settings are invalid:")
    for name in ("LAUNCH_KAGGLE_POLL_S", "LAUNCH_COLAB_POLL_S", "LAUNCH_VAST_URL"):
        assert len([line for line in out.splitlines() if f"{name}=" in line]) == 1, out


def test_the_installed_command_says_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCH_KAGGLE_POLL_S", "abc")
    proc = subprocess.run([*launch_cmd(), "ls"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == ExitStatus.SPEC
    assert proc.stderr.startswith(
        "error: LAUNCH_KAGGLE_POLL_S='abc': expected a number of seconds > 0"
    ), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_help_works_with_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAUNCH_KAGGLE_POLL_S", "abc")
    for args in (["--help"], ["ls", "--help"], ["sim", "-h"]):
        code, out = _launch(capsys, *args)
        assert code == 0 and "Usage:" in out and "LAUNCH_KAGGLE_POLL_S" not in out, args


def test_valid_and_blank_settings_are_accepted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "LAUNCH_KAGGLE_POLL_S": "0.2",
        "LAUNCH_COLAB_POLL_S": "5",
        "LAUNCH_KAGGLE_ATTEMPTS": "6.0",
        "LAUNCH_VAST_URL": "http://127.0.0.1:8765/",
        "LAUNCH_KAGGLE_URL": "https://api.kaggle.com",
        "LAUNCH_REGISTRY": "127.0.0.1:5000/lab",
        "LAUNCH_NO_PROBE": "1",
        "LAUNCH_NO_BROWSER": "false",
        "LAUNCH_DRIVE_URL": "  ",  # blank: the default, as before
    }.items():
        monkeypatch.setenv(name, value)
    assert settings.validate_all() == []
    code, out = _launch(capsys, "ls")
    assert code == 0 and "no runs yet" in out


def test_accessors_return_the_value_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.targets.kaggle.target import KaggleTarget
    from launcher.targets.vast.client import DEFAULT_URL, api_url

    monkeypatch.delenv("LAUNCH_VAST_URL", raising=False)
    assert api_url() == DEFAULT_URL
    monkeypatch.setenv("LAUNCH_VAST_URL", "http://127.0.0.1:8765/")
    assert api_url() == "http://127.0.0.1:8765"
    monkeypatch.setenv("LAUNCH_KAGGLE_POLL_S", "0.2")
    assert KaggleTarget(Path("unused")).poll_s == 0.2
    monkeypatch.setenv("LAUNCH_KAGGLE_POLL_S", "")
    assert KaggleTarget(Path("unused")).poll_s == 5.0
    monkeypatch.setenv("LAUNCH_KAGGLE_ATTEMPTS", "6.0")
    assert settings.count("LAUNCH_KAGGLE_ATTEMPTS", default=3) == 6
    monkeypatch.setenv("LAUNCH_REGISTRY", "ghcr.io/you/")
    assert settings.registry("LAUNCH_REGISTRY") == "ghcr.io/you"
    for value, on in (("1", True), ("Yes", True), ("0", False), ("off", False)):
        monkeypatch.setenv("LAUNCH_NO_PROBE", value)
        assert settings.flag("LAUNCH_NO_PROBE") is on


def test_accessors_refuse_at_once_without_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API has no CLI in front: the setting is refused where it is read, before any
    connection is tried (it used to be retried for 7.5 s before 'unknown url type')."""
    from launcher.targets.colab.target import ColabTarget
    from launcher.targets.vast.client import api_url

    monkeypatch.setenv("LAUNCH_VAST_URL", "127.0.0.1:1")
    with pytest.raises(SettingError, match=r"^LAUNCH_VAST_URL='127.0.0.1:1': expected a URL"):
        api_url()
    monkeypatch.setenv("LAUNCH_COLAB_POLL_S", "abc")
    with pytest.raises(SettingError, match=r"^LAUNCH_COLAB_POLL_S='abc': expected a number"):
        ColabTarget(Path("unused"))


def test_every_setting_the_launcher_reads_is_in_the_table() -> None:
    """A new LAUNCH_* read gets a row (and so a check); a checked kind is read through its
    accessor, never with a raw float() or os.environ."""
    launcher_dir = REPO / "launcher"
    read = re.compile(r"environ(?:\.get)?[\[(]\s*\"(LAUNCH_[A-Z0-9_]+)\"")
    for path in launcher_dir.rglob("*.py"):
        rel = path.relative_to(launcher_dir).as_posix()
        if rel.startswith(ELSEWHERE) or rel == "settings.py":
            continue
        for name in read.findall(path.read_text()):
            assert name in settings.SETTINGS, f"{rel} reads {name}, which is not in the table"
            kind = settings.SETTINGS[name].kind
            assert kind is settings.Kind.TEXT, f"{rel} reads {name} raw: use settings.{kind.value}"
