"""The in-job agent, run for real: a real agent process supervising small python workloads.

LAUNCH_AGENT_PYTHON picks the interpreter that runs the agent (e.g. a python3.8, the oldest the
agent supports); the workloads always run on this one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher import agent
from tests.conftest import default_signals

AGENT = Path(agent.__file__).resolve()
AGENT_PYTHON = os.environ.get("LAUNCH_AGENT_PYTHON", sys.executable)
FAST = {"heartbeat_s": 0.2, "grace_s": 2, "control_poll_s": 0.1}

# a workload that saves a checkpoint when asked to stop, then exits 0
SAVES_ON_SIGTERM = """
    import os, signal, time
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(time.time()))
    open("ready", "w").close()
    while not stop:
        time.sleep(0.02)
    time.sleep(float(os.environ.get("SAVE_S", "0.3")))  # a checkpoint takes a while to write
    ckpt = os.path.join(os.environ["LAUNCH_CHECKPOINT_DIR"], "ckpt-final")
    with open(ckpt + ".tmp", "w") as f:
        f.write(str(stop[0]))
    os.replace(ckpt + ".tmp", ckpt)
"""


def make_root(tmp_path: Path, script: str, **config: Any) -> Path:
    root = tmp_path / "root"
    workload = root / "bundle" / "workload"
    workload.mkdir(parents=True)
    (workload / "job.py").write_text(textwrap.dedent(script))
    cfg = {"run_id": "run-1", "command": [sys.executable, "job.py"], **FAST, **config}
    (root / "bundle" / "agent.json").write_text(json.dumps(cfg))
    return root


def start(root: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AGENT_PYTHON, str(AGENT), "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
        preexec_fn=default_signals,
    )


def run(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = start(root, env)
    out, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(cond: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def status(root: Path) -> dict[str, Any]:
    return json.loads((root / agent.STATUS_FILE).read_text())


def log_lines(root: Path) -> list[tuple[str, str, str]]:
    lines = (root / agent.LOG_FILE).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    parsed = [agent.parse_log_line(line) for line in lines[:-1]]
    assert None not in parsed, lines
    return [p for p in parsed if p is not None]


def texts(root: Path, stream: str) -> list[str]:
    return [text for _, s, text in log_lines(root) if s == stream]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_env_contract(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import json, os
        names = ("RUN_ID", "OUTPUT_DIR", "CHECKPOINT_DIR", "INPUT_DIR", "ATTEMPT", "RESUME_FROM")
        names = ["LAUNCH_" + n for n in names] + ["PYTHONUNBUFFERED", "MY_VAR", "MY_SECRET"]
        keep = {k: os.environ[k] for k in names if k in os.environ}
        keep["cwd"] = os.getcwd()
        with open(os.path.join(os.environ["LAUNCH_OUTPUT_DIR"], "env.json"), "w") as f:
            json.dump(keep, f)
        """,
        env={"MY_VAR": "from-config"},
        attempt=3,
    )
    # a stale value in the agent's environment must not leak through as a resume point
    done = run(root, env={"MY_SECRET": "s3cr3t-value", "LAUNCH_RESUME_FROM": "/stale"})
    assert done.returncode == 0, done.stderr
    env = json.loads((root / "outputs" / "env.json").read_text())
    assert env == {
        "LAUNCH_RUN_ID": "run-1",
        "LAUNCH_OUTPUT_DIR": str(root / "outputs"),
        "LAUNCH_CHECKPOINT_DIR": str(root / "checkpoints"),
        "LAUNCH_INPUT_DIR": str(root / "inputs"),
        "LAUNCH_ATTEMPT": "3",
        "PYTHONUNBUFFERED": "1",
        "MY_VAR": "from-config",
        "MY_SECRET": "s3cr3t-value",
        "cwd": str(root / "bundle" / "workload"),
    }
    assert (root / "checkpoints").is_dir()
    for written in (root / agent.LOG_FILE, root / agent.STATUS_FILE):
        assert "s3cr3t-value" not in written.read_text()
    assert status(root)["attempt"] == 3


def test_the_image_environment_is_under_the_job_env(tmp_path: Path) -> None:
    """Started over SSH, the agent gets sshd's environment: the image's ENV (its PATH to a
    virtualenv) comes from agent.json, and the job's own env goes over it, as with docker."""
    tool = tmp_path / "venv" / "bin"
    tool.mkdir(parents=True)
    (tool / "imagetool").write_text('#!/bin/sh\necho "$IMAGE_VAR $BOTH" > "$LAUNCH_OUTPUT_DIR/t"\n')
    (tool / "imagetool").chmod(0o755)
    root = make_root(
        tmp_path,
        "",
        command="imagetool",
        image_env={"PATH": f"{tool}:/usr/bin:/bin", "IMAGE_VAR": "img", "BOTH": "image"},
        env={"BOTH": "job"},
    )
    done = run(root, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert (root / "outputs" / "t").read_text() == "img job\n"


def test_input_dir_and_shell_command(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        "",
        command='echo "$LAUNCH_INPUT_DIR" > "$LAUNCH_OUTPUT_DIR/in"',
        input_dir="/kaggle/input",
    )
    assert run(root).returncode == 0
    assert (root / "outputs" / "in").read_text() == "/kaggle/input\n"


def test_resume_from_newest_checkpoint(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import os
        with open(os.path.join(os.environ["LAUNCH_OUTPUT_DIR"], "resume"), "w") as f:
            f.write(os.environ.get("LAUNCH_RESUME_FROM", "<unset>"))
        """,
    )
    ckpts = root / "checkpoints"
    ckpts.mkdir()
    now = time.time()
    # names sort against their age, so only the mtime can pick the right one
    ages = {"z-oldest": 300, "y-dir": 200, "x-older": 100, "step-b": 50, "step-a": 50}
    ages |= {n: 0 for n in (".hidden", "zz.tmp", "zz.partial", "zz.part", "zz~")}
    for name, age in ages.items():
        path = ckpts / name
        if name == "y-dir":
            path.mkdir()
        else:
            path.write_text(name)
        os.utime(path, (now - age, now - age))
    assert run(root).returncode == 0
    # same mtime: the greater name wins, so every reader agrees
    assert (root / "outputs" / "resume").read_text() == str(ckpts / "step-b")
    assert agent.newest_checkpoint(ckpts) == str(ckpts / "step-b")
    assert status(root)["last_checkpoint"] == "step-b"
    assert any("resuming from" in t and "step-b" in t for t in texts(root, "agent"))


@pytest.mark.parametrize("order", [1, -1])
def test_newest_checkpoint_breaks_ties_by_name(tmp_path: Path, order: int) -> None:
    # both creation orders, so a pick that depends on the listing order fails one of them
    names = [f"step-{c}" for c in "abcdef"][::order]
    for name in names:
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, (1_000_000, 1_000_000))
    assert agent.newest_checkpoint(tmp_path) == str(tmp_path / "step-f")


def test_newest_checkpoint_ignores_partial_and_missing(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "only.tmp").write_text("x")
    assert agent.newest_checkpoint(tmp_path / "c") is None
    assert agent.newest_checkpoint(tmp_path / "missing") is None


def test_log_lines_timestamped_in_order_and_echoed(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import sys, time
        for i in range(3):
            print(f"out {i}", flush=True)
            time.sleep(0.05)
            print(f"err {i}", file=sys.stderr, flush=True)
            time.sleep(0.05)
        sys.stdout.buffer.write(b"bad \\xff byte\\n")
        sys.stdout.write("10%\\r50%\\r100%\\r\\n")
        sys.stdout.write("no newline at the end")
        """,
    )
    done = run(root)
    assert done.returncode == 0
    lines = log_lines(root)
    stamps = [at for at, _, _ in lines]
    assert stamps == sorted(stamps)
    assert all(len(at) == 24 and at.endswith("Z") and at[19] == "." for at in stamps)
    workload = [(s, t) for _, s, t in lines if s != "agent"]
    expected = [
        ("out" if i % 2 == 0 else "err", f"{'out' if i % 2 == 0 else 'err'} {i // 2}")
        for i in range(6)
    ]
    assert workload[:6] == expected
    assert workload[6:] == [
        ("out", "bad \ufffd byte"),
        ("out", "10%"),
        ("out", "50%"),
        ("out", "100%"),
        ("out", "no newline at the end"),
    ]
    agent_texts = texts(root, "agent")
    assert any("started pid" in t for t in agent_texts)
    assert "exit code 0" in agent_texts[-1]
    assert lines[-1][1] == "agent"  # after every workload line
    assert "out 0\nout 1\nout 2\n" in done.stdout
    assert "err 0\nerr 1\nerr 2\n" in done.stderr
    assert done.stdout.endswith("no newline at the end")


def test_parse_log_line() -> None:
    at = "2024-05-01T12:00:00.123Z"
    assert agent.parse_log_line(f"{at} out hello  world\n") == (at, "out", "hello  world")
    assert agent.parse_log_line(f"{at} err ") == (at, "err", "")
    assert agent.parse_log_line(f"{at} agent") == (at, "agent", "")
    assert agent.parse_log_line(f"{at} bogus text") is None
    assert agent.parse_log_line("not a log line at all") is None
    assert agent.parse_log_line("") is None


def test_status_always_valid_json_and_heartbeat_advances(tmp_path: Path) -> None:
    root = make_root(tmp_path, "import time; time.sleep(1.5)")
    proc = start(root)
    reads: list[dict[str, Any]] = []
    torn: list[str] = []
    while proc.poll() is None:
        try:
            raw = (root / agent.STATUS_FILE).read_text()
        except FileNotFoundError:
            continue
        try:
            reads.append(json.loads(raw))
        except ValueError:
            torn.append(raw)
    proc.communicate()
    assert torn == []
    assert len(reads) > 200
    beats = sorted({r["heartbeat_at"] for r in reads if r["phase"] == "running"})
    assert len(beats) >= 4  # 1.5 s at 0.2 s
    final = status(root)
    assert final["phase"] == "exited" and final["exit_code"] == 0
    assert final["stop_reason"] is None and final["error"] is None
    assert final["run_id"] == "run-1" and final["agent_version"] == agent.AGENT_VERSION
    assert isinstance(final["pid"], int)
    assert final["started_at"] <= final["heartbeat_at"] and final["ended_at"]
    phases = [r["phase"] for r in reads]
    assert phases.index("running") < phases.index("exited")


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ([sys.executable, "job.py"], 0),
        # the shell waits for its command and exits with its status; "after" never runs
        (f"{sys.executable} job.py; echo after", 0),
        # a shell without a trap dies at once, but the rest of the group still gets its grace
        (["/bin/sh", "-c", f"{sys.executable} job.py; echo after"], 128 + signal.SIGTERM),
    ],
)
def test_sigterm_is_forwarded_and_workload_checkpoints(
    tmp_path: Path, command: str | list[str], code: int
) -> None:
    root = make_root(tmp_path, SAVES_ON_SIGTERM, grace_s=5, command=command)
    proc = start(root)
    wait_for(lambda: (root / "bundle" / "workload" / "ready").exists())
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == code
    assert 0 <= float((root / "checkpoints" / "ckpt-final").read_text()) - sent < 1
    st = status(root)
    assert st["stop_reason"] == "signal" and st["phase"] == "exited" and st["exit_code"] == code
    assert "after" not in texts(root, "out")
    assert st["last_checkpoint"] == "ckpt-final"
    assert any("stop requested (signal" in t and "SIGTERM" in t for t in texts(root, "agent"))


def test_workload_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # a child that also ignores SIGTERM: the whole group must go
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        while True:
            time.sleep(0.05)
        """,
        grace_s=1.0,
    )
    proc = start(root, env={"PYTHONUNBUFFERED": "1"})
    pid_file = root / "bundle" / "workload" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    time.sleep(0.3)  # both have installed SIG_IGN by now
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.7)
    proc.send_signal(signal.SIGTERM)  # must not restart the grace period
    proc.communicate(timeout=10)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGKILL
    assert 0.9 < elapsed < 1.6
    wait_for(lambda: not alive(int(pid_file.read_text())), timeout=2)
    st = status(root)
    assert st["exit_code"] == 137 and st["stop_reason"] == "signal"
    agent_texts = texts(root, "agent")
    assert any("SIGINT" in t for t in agent_texts)
    assert sum("stop requested" in t for t in agent_texts) == 1
    assert any("sent SIGKILL" in t for t in agent_texts)


def test_processes_left_behind_are_killed(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import subprocess, sys
        # inherits stdout: a supervisor that waited for EOF would hang on it
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        """,
    )
    t0 = time.monotonic()
    done = run(root)
    assert done.returncode == 0
    assert time.monotonic() - t0 < 3
    child = int((root / "bundle" / "workload" / "child.pid").read_text())
    wait_for(lambda: not alive(child), timeout=2)
    assert any("left behind" in t for t in texts(root, "agent"))


def test_control_file_stops_the_run(tmp_path: Path) -> None:
    root = make_root(tmp_path, SAVES_ON_SIGTERM)
    proc = start(root)
    wait_for(lambda: (root / "bundle" / "workload" / "ready").exists())
    control = root / agent.CONTROL_FILE
    control.write_text('{"desi')  # half-written
    time.sleep(0.3)
    control.write_text('{"desired": "run"}')
    time.sleep(0.3)
    assert proc.poll() is None
    assert status(root)["phase"] == "running"
    control.write_text(json.dumps({"desired": "stop"}))
    proc.communicate(timeout=10)
    assert proc.returncode == 0
    st = status(root)
    assert st["stop_reason"] == "control" and st["last_checkpoint"] == "ckpt-final"


@pytest.mark.parametrize(
    ("limit", "margin", "stop_at"),
    [(1.5, 0.5, 1.0), (4.0, 10, 3.6)],  # the margin eats the limit: stop at 90%
)
def test_time_limit_stops_before_the_limit(
    tmp_path: Path, limit: float, margin: float, stop_at: float
) -> None:
    root = make_root(
        tmp_path,
        SAVES_ON_SIGTERM,
        time_limit_s=limit,
        stop_margin_s=margin,
        env={"SAVE_S": "0.05"},
    )
    proc = start(root)
    proc.communicate(timeout=10)
    ended = time.time()
    assert proc.returncode == 0
    # the limit counts from the agent's start (its first log line), not from the spawn: a
    # loaded machine may take a while to start Python
    from datetime import datetime

    first = log_lines(root)[0][0]
    t0 = datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()
    got_sigterm = float((root / "checkpoints" / "ckpt-final").read_text()) - t0
    assert stop_at <= got_sigterm + 0.01 < stop_at + 0.3  # log stamps are to the millisecond
    assert ended - t0 < limit + 0.3
    st = status(root)
    assert st["stop_reason"] == "time_limit" and st["last_checkpoint"] == "ckpt-final"


def test_time_limit_caps_the_grace_period(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)",
        time_limit_s=1.0,
        stop_margin_s=0.5,
        grace_s=20,
    )
    t0 = time.monotonic()
    done = run(root)
    assert done.returncode == 137
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ([sys.executable, "-c", "import sys; sys.exit(3)"], 3),
        (
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"],
            128 + signal.SIGUSR1,
        ),
        ("exit 5", 5),
        (["/nonexistent/program"], 127),
    ],
)
def test_exit_code_propagates(tmp_path: Path, command: str | list[str], code: int) -> None:
    root = make_root(tmp_path, "", command=command)
    done = run(root)
    assert done.returncode == code
    st = status(root)
    assert st["phase"] == "exited" and st["exit_code"] == code and st["stop_reason"] is None
    assert texts(root, "agent")[-1].endswith(f"exit code {code}")


def test_last_metrics_is_last_complete_line(tmp_path: Path) -> None:
    root = make_root(
        tmp_path,
        """
        import os
        path = os.path.join(os.environ["LAUNCH_OUTPUT_DIR"], "metrics.jsonl")
        with open(path, "w") as f:
            f.write('{"epoch": 1, "loss": 0.9}\\n{"epoch": 2, "loss": 0.5}\\n\\n[1, 2]\\n')
            f.write('{"epoch": 3, "lo')  # the writer was cut off mid-line
        """,
    )
    assert run(root).returncode == 0
    assert status(root)["last_metrics"] == {"epoch": 2, "loss": 0.5}


def test_last_metrics_reads_only_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    filler = json.dumps({"pad": "x" * 1000}) + "\n"
    path.write_text(filler * 2000 + '{"epoch": 9}\n')
    assert agent.read_last_metrics(str(path)) == {"epoch": 9}
    assert agent.read_last_metrics(str(tmp_path / "none.jsonl")) is None


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (None, "cannot read"),
        ("{not json", "bad config"),
        ({"command": "true"}, "run_id"),
        ({"run_id": "r", "command": []}, "command"),
        ({"run_id": "r", "command": "true", "env": {"A": 1}}, "env"),
        ({"run_id": "r", "command": "true", "grace_s": -1}, "grace_s"),
        ({"run_id": "r", "command": "true", "attempt": True}, "attempt"),
        ({"run_id": "r", "command": "true", "workdir": "nope"}, "workdir"),
    ],
)
def test_bad_config_exits_2(tmp_path: Path, config: Any, problem: str) -> None:
    root = tmp_path / "root"
    (root / "bundle" / "workload").mkdir(parents=True)
    if config is not None:
        raw = config if isinstance(config, str) else json.dumps(config)
        (root / "bundle" / "agent.json").write_text(raw)
    done = run(root)
    assert done.returncode == 2
    assert "bad config" in done.stderr and problem in done.stderr
    st = status(root)
    assert st["phase"] == "exited" and st["exit_code"] == 2 and problem in st["error"]


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = f"import runpy; runpy.run_path({str(AGENT)!r}, run_name='imported')"
    done = subprocess.run(
        [AGENT_PYTHON, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0 and done.stdout == done.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_log_writes_are_whole_lines_under_concurrency(tmp_path: Path) -> None:
    log = agent.JobLog(str(tmp_path / "logs" / "job.log"))
    log._echo = False  # keep pytest's output clean

    def spam(stream: str) -> None:
        for i in range(500):
            log.write(stream, f"{stream}-{i}-" + "y" * 200)

    threads = [threading.Thread(target=spam, args=(s,)) for s in ("out", "err")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = log_lines(tmp_path)
    assert len(lines) == 1000
    for stream in ("out", "err"):
        got = [t.split("-")[1] for _, s, t in lines if s == stream]
        assert got == [str(i) for i in range(500)]


# a workload that appends one metrics line, then writes that epoch's checkpoint, every 0.3 s
METRICS_THEN_CHECKPOINT = """
    import json, os, time
    out, ck = os.environ["LAUNCH_OUTPUT_DIR"], os.environ["LAUNCH_CHECKPOINT_DIR"]
    for epoch in range(1, int(os.environ.get("EPOCHS", "4")) + 1):
        with open(os.path.join(out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch}) + "\\n")
        path = os.path.join(ck, "ckpt-%04d" % epoch)
        with open(path + ".tmp", "w") as f:
            f.write(str(epoch))
        os.replace(path + ".tmp", path)
        time.sleep(0.3)
"""


def test_metrics_are_snapshotted_as_each_checkpoint_appears(tmp_path: Path) -> None:
    root = make_root(tmp_path, METRICS_THEN_CHECKPOINT, env={"EPOCHS": "7"})
    proc = run(root)
    assert proc.returncode == 0, proc.stderr
    snaps = root / agent.METRICS_SNAPSHOTS
    names = sorted(p.name for p in snaps.iterdir())
    # the newest few are kept, each holding exactly the lines written up to its checkpoint
    assert names == [f"ckpt-{e:04d}.jsonl" for e in range(3, 8)], names
    for e in range(3, 8):
        lines = (snaps / f"ckpt-{e:04d}.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == list(range(1, e + 1))


def test_a_resumed_checkpoint_is_not_snapshotted_again(tmp_path: Path) -> None:
    root = make_root(tmp_path, "print('no checkpoint here')")
    (root / agent.CHECKPOINTS).mkdir(parents=True)
    (root / agent.CHECKPOINTS / "ckpt-0009").write_text("9")
    proc = run(root)
    assert proc.returncode == 0, proc.stderr
    assert not (root / agent.METRICS_SNAPSHOTS).exists()


def test_status_names_the_workload_by_pid_and_start_time(tmp_path: Path) -> None:
    """Whoever kills the workload's group later checks its pid still is the workload."""
    from launcher.runs import process_start

    root = make_root(tmp_path, "import time; time.sleep(3)")
    proc = start(root)
    try:
        wait_for(
            lambda: (root / agent.STATUS_FILE).exists() and status(root).get("phase") == "running"
        )
        st = status(root)
        assert st["pid_start"] is not None and st["pid_start"] == process_start(st["pid"])
    finally:
        proc.kill()
        proc.communicate(timeout=20)
