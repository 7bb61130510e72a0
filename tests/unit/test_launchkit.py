"""launchkit, the job author's helper every bundle carries: real files, a real signal, and the
same checkpoint choice as the agent's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher import agent, launchkit
from launcher.bundle import extract_bundle
from launcher.spec import load_spec
from launcher.targets.jobfiles import job_bundle
from tests.conftest import REPO, default_signals, kit_path


def test_checkpoints_rotate_by_number_and_the_newest_is_the_agents_choice(tmp_path: Path) -> None:
    for epoch in (1, 2, 10, 3):  # 10 is newer than 3 by number, not by name
        launchkit.save_checkpoint(tmp_path, f"ckpt-epoch-{epoch}.pt", b"x" * epoch, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-epoch-10.pt",
        "ckpt-epoch-2.pt",
        "ckpt-epoch-3.pt",
    ]
    (tmp_path / "notes.txt").write_text("not a checkpoint: never rotated away\n")
    pattern = re.compile(r"^ckpt-epoch-(\d+)\.pt$")
    launchkit.save_checkpoint(tmp_path, "ckpt-epoch-11.pt", b"y", keep=1, pattern=pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-epoch-11.pt", "notes.txt"]
    (tmp_path / ".ckpt-epoch-12.pt.tmp1").write_text("half")  # a write in progress
    newest = launchkit.newest_checkpoint(tmp_path)
    assert newest is not None and str(newest) == agent.newest_checkpoint(tmp_path)


def test_files_are_whole_and_a_torn_jsonl_line_is_skipped(tmp_path: Path) -> None:
    launchkit.atomic_write_json(tmp_path / "summary.json", {"b": 1, "a": [1, 2]})
    assert (
        tmp_path / "summary.json"
    ).read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left
    metrics = tmp_path / "metrics.jsonl"
    launchkit.append_jsonl(metrics, {"epoch": 1})
    launchkit.append_jsonl(metrics, {"epoch": 2})
    with metrics.open("a") as f:
        f.write('{"epoch": 3, "lo')  # killed mid-write
    assert launchkit.read_jsonl(metrics) == [{"epoch": 1}, {"epoch": 2}]


def test_folders_come_from_the_agents_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCH_OUTPUT_DIR", str(tmp_path / "o"))
    monkeypatch.setenv("LAUNCH_CHECKPOINT_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("LAUNCH_RESUME_FROM", raising=False)
    assert launchkit.output_dir().is_dir() and launchkit.checkpoint_dir().is_dir()
    assert launchkit.resume_from() is None
    monkeypatch.setenv("LAUNCH_RESUME_FROM", str(tmp_path / "c" / "ckpt-1"))
    assert launchkit.resume_from() == tmp_path / "c" / "ckpt-1"


def test_sigterm_sets_the_flag_and_the_job_exits_as_a_shell_expects(tmp_path: Path) -> None:
    job = textwrap.dedent(
        """
        import sys, time
        import launchkit as lk
        stop = lk.StopFlag.install()
        print("ready", flush=True)
        while not stop.requested:
            time.sleep(0.01)
        print("saved on", stop.name, flush=True)
        sys.exit(stop.exit_code)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", job],
        env=dict(os.environ, PYTHONPATH=kit_path()),
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 143 and out.strip() == "saved on SIGTERM"


def test_every_bundle_carries_launchkit_where_the_agent_puts_it_on_the_path(
    tmp_path: Path,
) -> None:
    spec = load_spec(REPO / "jobs" / "hello.yaml")
    bundle = job_bundle(spec, tmp_path, lambda _m: None)
    extract_bundle(bundle.path, tmp_path / "bundle")
    shipped = tmp_path / "bundle" / "launchkit.py"
    assert shipped.read_bytes() == Path(launchkit.__file__).read_bytes()
    assert (tmp_path / "bundle" / "agent.py").is_file()
    # the agent runs the job with its own folder first on PYTHONPATH
    (tmp_path / "bundle" / "agent.json").write_text(
        '{"run_id": "r", "command": "python3 -c \\"import launchkit; print(launchkit.__file__)\\""}'
    )
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "bundle" / "agent.py"), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(shipped) in proc.stdout
