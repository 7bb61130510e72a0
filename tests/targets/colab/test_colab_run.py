"""The Colab target end to end: the real CLI, the Drive emulator (spoken to through the real
pydrive2), and the Colab runtime emulator executing the generated notebook in a real Jupyter
kernel. The user's click is a GET of the link `launch` prints.

The contract scenarios (cancel, SIGTERM, kill -9 + gc, a disconnect resumed without loss) run in
tests/contract; these are what only Colab has.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim
from tests.conftest import default_signals, launch_cmd
from tests.targets.colab.conftest import FAST, SECRET_NAME, SECRET_VALUE, colab_env

LINK = re.compile(r"Run all: (\S+/drive/\S+)")


def launch(project: Path, env: dict[str, str], *args: str, timeout: float = 240, **kw: Any):
    return subprocess.run(
        [*launch_cmd(), *args], cwd=project, env=env, capture_output=True, text=True,
        timeout=timeout, **kw,
    )  # fmt: skip


def background(project: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*launch_cmd(), *args], cwd=project, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=default_signals,
    )  # fmt: skip


def read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> str:
    """Lines of `proc` up to the first that matches; the match's first group."""
    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = pattern.search(line)
        if m:
            return m.group(1)
    pytest.fail(f"no line matching {pattern.pattern!r} in:\n{''.join(seen)}")


def record(project: Path, env: dict[str, str], run: str = "last") -> dict[str, Any]:
    proc = launch(project, env, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_run_waits_for_the_user_and_runs_once_the_link_is_opened(
    project: Path, launch_home: Path, drive: DriveSim, colab: ColabSim
) -> None:
    env = colab_env(launch_home, drive, colab)
    proc = background(project, env, "run", "jobs/hello.yaml", "--profile", "smoke", *FAST)
    link = read_until(proc, LINK, 60)
    time.sleep(1.5)  # nobody opened it yet: the run waits, and says for what
    rec = record(project, env)
    assert rec["status"] in ("provisioning", "uploading", "starting"), rec["status"]
    assert f"waiting for you to open {link}" in rec["message"], rec
    assert colab.sessions == {}
    nb_id = link.rsplit("/", 1)[1]
    [nb] = [f for f in drive.files() if f.id == nb_id]
    assert nb.mime_type == "application/vnd.google.colaboratory"
    meta = json.loads(drive.content(nb_id))["metadata"]
    assert "accelerator" not in meta  # a CPU job asks for no GPU runtime
    opened = time.monotonic()
    urllib.request.urlopen(link, timeout=30).read()  # the user's click
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "hi from hello" in out and "epoch 3/3" in out
    assert time.monotonic() - opened < 60
    rec = record(project, env)
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0
    run_dir = Path(rec["output_dir"])
    assert (run_dir / "checkpoints" / "ckpt-epoch-0003.json").is_file()
    [attempt] = rec["attempts"]
    assert attempt["where"].startswith("Colab session 1") and float(attempt["price_per_hour"]) == 0
    # the session's folder went to Drive's trash; nothing of the run is left in My Drive
    assert not [f for f in drive.files(trashed=False) if f.title.startswith(rec["id"])]
    assert [f for f in drive.files(trashed=True) if f.title == f"{rec['id']}-s1"]


def test_a_real_workload_runs_its_smoke_profile_through_the_notebook(
    project: Path, launch_home: Path, drive: DriveSim, tmp_path: Path
) -> None:
    """libcem (a graph-diffusion denoiser in torch): its lowered requirements are checked in the
    notebook against the runtime's Python, which has them; it trains, checkpoints, and its
    outputs come home through Drive."""
    with ColabSim(
        drive_url=drive.url, data_dir=tmp_path / "colab-sim", sync_seconds=0.5, auto_open=True
    ) as colab:
        env = colab_env(launch_home, drive, colab)
        proc = launch(project, env, "run", "jobs/libcem.yaml", "--profile", "smoke", *FAST,
                      timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "keeping torch" in proc.stderr  # the runtime's own torch satisfies torch>=2.6
    rec = record(project, env)
    assert rec["status"] == "succeeded"
    run_dir = Path(rec["output_dir"])
    assert list((run_dir / "checkpoints").iterdir())
    metrics = (run_dir / "outputs" / "metrics.jsonl").read_text().splitlines()
    assert metrics and all(json.loads(m)["epoch"] for m in metrics)


def test_cancel_reaches_the_notebook_within_one_sync_period(
    project: Path, launch_home: Path, drive: DriveSim, colab: ColabSim
) -> None:
    sync_s = 2.0
    env = colab_env(launch_home, drive, colab)
    proc = background(
        project, env, "run", "jobs/hello.yaml", "--target", "colab",
        "--set", f"targets.colab.sync_seconds={sync_s}",
        "--set", "run=python3 -m hello.train --epochs 60 --epoch-seconds 0.4",
    )  # fmt: skip
    link = read_until(proc, LINK, 60)
    urllib.request.urlopen(link, timeout=30).read()
    read_until(proc, re.compile(r"(epoch 2/60)"), 90)
    run_id = record(project, env)["id"]
    cancel = launch(project, env, "cancel", run_id, "--no-wait")
    asked = time.time()
    assert cancel.returncode == 0, cancel.stderr
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    rec = record(project, env, run_id)
    assert (rec["status"], rec["stop_reason"]) == ("cancelled", "cancel")
    log = (Path(rec["output_dir"]) / "logs" / "job.log").read_text()
    [stop_line] = [line for line in log.splitlines() if "control.json asks to stop" in line]
    seen = stop_line.split(" ", 1)[0].replace("Z", "+00:00")
    from datetime import datetime

    took = datetime.fromisoformat(seen).timestamp() - asked
    # one notebook sync period, plus the mount's sync (0.3 s) and the agent's poll (1 s)
    assert took < sync_s + 0.3 + 1.0 + 1.0, f"the stop reached the job after {took:.1f}s"
    assert "checkpoint saved on SIGTERM" in log
    assert all(s.state != "running" for s in colab.sessions.values())


def _consent_location(auth_url: str) -> str:
    """What the browser does: the consent page answers with a redirect to the loopback."""
    parts = urllib.parse.urlsplit(auth_url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    conn.request("GET", f"{parts.path}?{parts.query}")
    location = conn.getresponse().getheader("Location") or ""
    conn.close()
    return location


def test_auth_stores_a_private_token_and_no_secret_or_token_leaves_this_machine(
    project: Path, launch_home: Path, drive: DriveSim, colab: ColabSim
) -> None:
    """`launch auth colab` (no browser: the user pastes where the consent ended), then a job
    that reads a secret from Colab's Secrets. Neither the secret's value nor any token is in
    Drive (notebook included), the logs, the run folder or the store."""
    from launcher.sim.drive.sim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    env = colab_env(launch_home, drive, colab, creds=False)
    env.update(
        LAUNCH_COLAB_CLIENT_ID=DEFAULT_CLIENT_ID, LAUNCH_COLAB_CLIENT_SECRET=DEFAULT_CLIENT_SECRET
    )
    auth = subprocess.Popen(
        [*launch_cmd(), "auth", "colab", "--no-browser"], cwd=project, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert auth.stderr is not None and auth.stdin is not None
    url = ""
    while not url:
        line = auth.stderr.readline()
        assert line, "launch auth colab printed no link"
        url = line.strip() if line.strip().startswith("http") else ""
    auth.stdin.write(_consent_location(url) + "\n")
    auth.stdin.flush()
    out, err = auth.communicate(timeout=60)
    assert auth.returncode == 0, err
    creds_file = launch_home / "colab" / "credentials.json"
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
    creds = json.loads(creds_file.read_text())
    assert creds["refresh_token"] and creds["refresh_token"] not in out + err

    code = (
        "import hashlib, os; v = os.environ['HELLO_TOKEN']; "
        "print('secret sha', hashlib.sha256(v.encode()).hexdigest()[:16])"
    )
    run = background(
        project, env, "run", "jobs/hello.yaml", *FAST, "--set", f"run=python3 -c \"{code}\"",
        "--set", f"secrets=[{SECRET_NAME}]",
    )  # fmt: skip
    link = read_until(run, LINK, 60)
    urllib.request.urlopen(link, timeout=30).read()
    shown, _ = run.communicate(timeout=180)
    assert run.returncode == 0, shown
    digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()[:16]
    assert f"secret sha {digest}" in shown  # the job had the secret
    leaks = [SECRET_VALUE, creds["refresh_token"], creds["access_token"], drive.access_token()]
    blobs = {f"drive:{f.title}": drive.content(f.id) for f in drive.files() if f.size}
    rec = record(project, env)
    for root in (Path(rec["output_dir"]), launch_home):
        for path in root.rglob("*"):
            if path.is_file() and path != creds_file:
                blobs[str(path)] = path.read_bytes()
    blobs["launch output"] = shown.encode()
    for where, data in blobs.items():
        for value in leaks:
            assert value.encode() not in data, f"{value[:6]}... found in {where}"


def test_a_service_account_key_is_refused_with_what_to_do(
    project: Path, launch_home: Path, drive: DriveSim, colab: ColabSim, tmp_path: Path
) -> None:
    key = tmp_path / "service-account.json"
    key.write_text(json.dumps(drive.service_account_key()))
    env = colab_env(launch_home, drive, colab, creds=False)
    auth = launch(project, env, "auth", "colab", "--client-secrets", str(key), "--no-browser")
    assert auth.returncode != 0 and "Traceback" not in auth.stderr
    assert "service account cannot own files in a personal Drive" in auth.stderr
    env["LAUNCH_COLAB_CREDENTIALS"] = str(key)
    before = len(drive.files(trashed=None))
    run = launch(project, env, "run", "jobs/hello.yaml", *FAST)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "service account" in run.stderr and "launch auth colab" in run.stderr
    assert len(drive.files(trashed=None)) == before  # refused before anything was made


def test_plan_shows_the_gpu_the_session_cap_and_the_click(
    project: Path, launch_home: Path, drive: DriveSim, colab: ColabSim
) -> None:
    env = colab_env(launch_home, drive, colab)
    plan = launch(project, env, "plan", "jobs/libcem.yaml", "--target", "colab")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    text = plan.stdout + plan.stderr
    assert "T4" in text and "12 h" in text and "one click" in text
    # the image's own pin (torch 2.13: CUDA 13) cannot see Colab's GPU: refused with the fix
    bad = launch(project, env, "plan", "jobs/libcem.yaml", "--target", "colab",
                 "--set", "targets.colab.requirements=requirements.txt")  # fmt: skip
    text = bad.stdout + bad.stderr
    assert "CUDA 13" in text and "CUDA 12" in text, text


def test_the_notebook_asks_for_the_gpu_and_carries_no_secret() -> None:
    from launcher.targets.colab.handle import NotebookConfig
    from launcher.targets.colab.notebook import notebook_json

    config = NotebookConfig(
        run_id="job-abc123", session=2, folder_title="job-abc123-s2", folder_id="F1"
    )
    nb = json.loads(notebook_json(config, "L4"))
    assert nb["metadata"]["accelerator"] == "GPU"
    assert nb["metadata"]["colab"]["gpuType"] == "L4"
    code = nb["cells"][1]["source"]
    compile(code, "notebook", "exec")  # valid Python as generated
    assert "userdata.get(name)" in code and "drive.mount(" in code
    assert sys.version_info >= (3, 11)
    assert "refresh_token" not in code and "access_token" not in code and os.sep in "/"


def test_a_session_cap_ends_in_a_checkpoint_and_the_next_session_goes_on(
    project: Path, launch_home: Path, drive: DriveSim, tmp_path: Path
) -> None:
    """targets.colab.session_hours is short (22 s): the agent stops the job with a checkpoint
    before it (the VM's own cap comes later), and the next session, opened at once, goes on from
    that checkpoint; every epoch is there exactly once."""
    n = 20
    with ColabSim(
        drive_url=drive.url, data_dir=tmp_path / "colab-sim", sync_seconds=0.3, auto_open=True,
        session_seconds=40,
    ) as colab:  # fmt: skip
        env = colab_env(launch_home, drive, colab)
        proc = launch(
            project, env, "run", "jobs/hello.yaml", *FAST,
            "--set", f"run=python3 -m hello.train --epochs {n} --epoch-seconds 0.5",
            "--set", "targets.colab.session_hours=0.006", "--set", "limits.grace_seconds=5",
            timeout=400,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert all(s.reason != "session cap" for s in colab.sessions.values())
    rec = record(project, env)
    ends = [a["end"] for a in rec["attempts"]]
    assert rec["status"] == "succeeded" and ends[0] == "preempted" and ends[-1] == "succeeded"
    run_dir = Path(rec["output_dir"])
    lines = (run_dir / "outputs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, n + 1))
    assert "session cap" in proc.stderr
