"""`launch run` end to end on the local target, through the real CLI, on both runtimes.

docker: a real engine, the hello image built on the local base. process: a real subprocess in a
virtualenv. The launcher is a real subprocess too, so it can be killed -9 and interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, default_signals, launch_cmd

RUNTIMES = ["docker", "process"]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_env")
    return str(request.param)


def launch(project: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch_cmd(), *args], cwd=project, capture_output=True, text=True, timeout=timeout
    )


def start_launch(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*launch_cmd(), *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_signals,
    )


def record(project: Path, run: str = "last") -> dict:  # type: ignore[type-arg]
    proc = launch(project, "status", run, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def epochs(metrics: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines() if line.strip()]


def containers_for(run_id: str) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=launch.run_id={run_id}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def workspace(launch_home: Path, run_id: str) -> Path:
    return launch_home / "work" / run_id


def test_failing_job_is_recorded_truthfully_and_cleaned_up(
    project: Path, runtime: str, launch_home: Path
) -> None:
    proc = launch(
        project,
        "run",
        "jobs/hello.yaml",
        "--set",
        "run=python3 -m hello.train --epochs 5 --fail-at-epoch 2",
        "--set",
        f"targets.local.runtime={runtime}",
    )
    assert proc.returncode == 6, proc.stderr
    assert "failed" in proc.stderr and "Traceback" not in proc.stderr
    rec = record(project)
    assert rec["status"] == "failed"
    assert rec["failure_reason"] == "workload_exited_nonzero"
    assert rec["exit_code"] == 3
    # the log of a failed run is pulled too: that is where the reason is
    assert (Path(rec["output_dir"]) / "logs" / "job.log").is_file()
    if runtime == "docker":
        assert containers_for(rec["id"]) == []


def _slow_run(project: Path, runtime: str, epochs_n: int = 40) -> subprocess.Popen[str]:
    return start_launch(
        project,
        "run",
        "jobs/hello.yaml",
        "--set",
        f"run=python3 -m hello.train --epochs {epochs_n} --epoch-seconds 0.4",
        "--set",
        f"targets.local.runtime={runtime}",
        "--set",
        "limits.grace_seconds=10",
    )


def _current_run_id(project: Path) -> str:
    wait_for(lambda: launch(project, "status", "--json").returncode == 0, 60, "the run record")
    return record(project)["id"]


def _wait_checkpoints(launch_home: Path, run_id: str, n: int) -> None:
    ck = workspace(launch_home, run_id) / "checkpoints"
    wait_for(
        lambda: ck.is_dir() and len([p for p in ck.iterdir() if not p.name.startswith(".")]) >= n,
        120,
        f"{n} checkpoints in {ck}",
    )


def test_cancel_leaves_a_resumable_checkpoint_and_resume_continues(
    project: Path, launch_home: Path
) -> None:
    runtime = "process"  # the docker runtime's resume is in the contract suite
    total = 12
    launcher = _slow_run(project, runtime, total)
    run_id = _current_run_id(project)
    _wait_checkpoints(launch_home, run_id, 3)
    proc = launch(project, "cancel", run_id)
    assert proc.returncode == 0, proc.stderr
    launcher.wait(60)
    assert launcher.returncode == 130, launcher.stderr.read() if launcher.stderr else ""
    first = record(project, run_id)
    assert first["status"] == "cancelled" and first["failure_reason"] == "user_cancelled"
    done_first = epochs(Path(first["output_dir"]) / "outputs" / "metrics.jsonl")
    assert 3 <= len(done_first) < total
    assert (
        "checkpoint saved on SIGTERM"
        in (Path(first["output_dir"]) / "logs" / "job.log").read_text()
    )

    proc = launch(
        project,
        "run",
        "jobs/hello.yaml",
        "--resume-from",
        run_id,
        "--set",
        f"run=python3 -m hello.train --epochs {total}",
        "--set",
        f"targets.local.runtime={runtime}",
    )
    assert proc.returncode == 0, proc.stderr
    second = record(project)
    assert second["parent_id"] == run_id and second["status"] == "succeeded"
    done_second = epochs(Path(second["output_dir"]) / "outputs" / "metrics.jsonl")
    assert done_second[0] == done_first[-1] + 1, "resumed at the next epoch"
    assert done_first + done_second == list(range(1, total + 1)), "no epoch lost or repeated"


@pytest.mark.parametrize("how", ["SIGINT with SIGINT ignored by the shell", "SIGHUP"])
def test_ctrl_c_or_a_closed_terminal_stops_the_job_even_from_a_shell_that_ignores_sigint(
    project: Path, launch_home: Path, how: str
) -> None:
    """A launcher started by `cmd &` in a script inherits SIGINT ignored: Ctrl-C (here a
    SIGINT to it) must still stop the job with a checkpoint. A closed terminal (SIGHUP) too."""
    sig = signal.SIGINT if how.startswith("SIGINT") else signal.SIGHUP

    def as_from_a_script() -> None:
        default_signals()
        if sig == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    launcher = subprocess.Popen(
        [
            *launch_cmd(), "run", "jobs/hello.yaml",
            "--set", "run=python3 -m hello.train --epochs 40 --epoch-seconds 0.4",
            "--set", "targets.local.runtime=process", "--set", "limits.grace_seconds=10",
        ],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=as_from_a_script,
    )  # fmt: skip
    run_id = _current_run_id(project)
    _wait_checkpoints(launch_home, run_id, 2)
    os.kill(launcher.pid, sig)
    launcher.wait(60)
    err = launcher.stderr.read() if launcher.stderr else ""
    assert launcher.returncode == 130, err
    assert ("Ctrl-C" if sig == signal.SIGINT else "SIGHUP") in err and "Traceback" not in err
    rec = record(project, run_id)
    assert (rec["status"], rec["stop_reason"]) == ("cancelled", "interrupt")
    assert any((Path(rec["output_dir"]) / "checkpoints").iterdir())
    assert not workspace(launch_home, run_id).exists()  # freed


def test_detached_run_is_followed_by_a_background_supervisor(
    project: Path, launch_home: Path
) -> None:
    proc = launch(
        project,
        "run",
        "jobs/hello.yaml",
        "--detach",
        "--profile",
        "smoke",
        "--set",
        "targets.local.runtime=process",
    )
    assert proc.returncode == 0, proc.stderr
    assert "started" in proc.stdout
    run_id = record(project)["id"]
    follow = launch(project, "logs", "-f", run_id, timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert "epoch 3/3" in follow.stdout
    wait_for(
        lambda: record(project, run_id)["status"] == "succeeded", 60, "the supervisor to finish"
    )


def test_bad_spec_gets_one_line_per_problem_and_exit_2(project: Path) -> None:
    bad = project / "jobs" / "bad.yaml"
    bad.write_text("name: hello\nrun: echo\nresurces: {}\nlimits: {max_hours: soon}\n")
    proc = launch(project, "run", "jobs/bad.yaml")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.yaml:3" in proc.stderr and "resources" in proc.stderr
    assert "bad.yaml:4" in proc.stderr


def test_process_runtime_runs_the_job_in_a_virtualenv_with_the_image_requirements(
    tmp_path: Path, launch_home: Path
) -> None:
    proj = tmp_path / "proj"
    (proj / "workloads" / "reqs").mkdir(parents=True)
    (proj / "workloads" / "reqs" / "README").write_text("runs a one-line command\n")
    (proj / "images" / "reqs").mkdir(parents=True)
    (proj / "images" / "reqs" / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (proj / "images" / "reqs" / "requirements.txt").write_text("# pinned\nsix==1.17.0\n")
    (proj / "jobs").mkdir()
    (proj / "jobs" / "reqs.yaml").write_text(
        "name: reqs\nimage: reqs\nworkload: workloads/reqs\n"
        "run: python3 -c \"import os, sys, six; print('ENV', sys.prefix == os.environ['VIRTUAL_ENV'], six.__version__)\"\n"
        "targets: {local: {runtime: process}}\n"
    )
    proc = launch(proj, "run", "jobs/reqs.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ENV True 1.17.0" in proc.stdout
    # the environment is cached: a second run does not install again
    envs = list((launch_home / "envs").iterdir())
    assert launch(proj, "run", "jobs/reqs.yaml").returncode == 0
    assert list((launch_home / "envs").iterdir()) == envs


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_chosen_requirements_file_reaches_both_runtimes(
    rt: str,
    tmp_path: Path,
    docker_env: str,
    wheel_index: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`targets.local.requirements` picks the file the venv is built from (process) and the
    REQUIREMENTS build argument (docker); $LAUNCH_PIP_EXTRA_ARGS reaches the build as PIP_EXTRA_ARGS."""
    proj = tmp_path / "proj"
    (proj / "workloads" / "reqs").mkdir(parents=True)
    (proj / "workloads" / "reqs" / "README").write_text("runs a one-line command\n")
    img = proj / "images" / "reqs"
    img.mkdir(parents=True)
    (img / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG REQUIREMENTS=requirements.txt\n"
        'ARG PIP_EXTRA_ARGS=""\nCOPY requirements.txt requirements-cpu.txt /launch/image/\n'
        "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -q ${PIP_EXTRA_ARGS} "
        '-r /launch/image/${REQUIREMENTS} && echo "${PIP_EXTRA_ARGS}" > /opt/venv/extra\n'
        "ENV PATH=/opt/venv/bin:$PATH\n"
    )
    (img / "requirements.txt").write_text("six==1.16.0\n")
    (img / "requirements-cpu.txt").write_text("six==1.17.0\n")
    monkeypatch.setenv("LAUNCH_PIP_EXTRA_ARGS", "--no-cache-dir")
    (proj / "jobs").mkdir()
    (proj / "jobs" / "reqs.yaml").write_text(
        "name: reqs\nimage: reqs\nworkload: workloads/reqs\n"
        "run: python3 -c \"import six, pathlib as p; x = p.Path('/opt/venv/extra'); "
        "print('SIX', six.__version__, x.read_text().strip() if x.exists() else '-')\"\n"
        f"targets: {{local: {{runtime: {rt}, requirements: requirements-cpu.txt}}}}\n"
    )
    proc = launch(proj, "run", "jobs/reqs.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("SIX 1.17.0 --no-cache-dir" if rt == "docker" else "SIX 1.17.0 -") in proc.stdout
    # a file that is not there is named, with the key that asked for it
    bad = launch(proj, "run", "jobs/reqs.yaml", "--set", "targets.local.requirements=nope.txt")
    assert bad.returncode != 0 and "nope.txt" in bad.stderr and "Traceback" not in bad.stderr


def test_status_refresh_finishes_a_run_whose_launcher_died(
    project: Path, launch_home: Path
) -> None:
    launcher = _slow_run(project, "process", 4)
    run_id = _current_run_id(project)
    _wait_checkpoints(launch_home, run_id, 1)
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait(10)
    status_file = workspace(launch_home, run_id) / "status.json"
    wait_for(
        lambda: json.loads(status_file.read_text())["phase"] == "exited", 60, "the job to end"
    )
    assert record(project, run_id)["status"] in ("starting", "running")  # the store is stale
    proc = launch(project, "status", run_id, "--refresh", "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["status"] == "succeeded"
    assert epochs(Path(rec["output_dir"]) / "outputs" / "metrics.jsonl") == [1, 2, 3, 4]


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_secret_reaches_the_job_but_no_file_the_launcher_writes(
    project: Path, launch_home: Path, rt: str, request: pytest.FixtureRequest
) -> None:
    if rt == "docker":
        request.getfixturevalue("docker_env")
    secret = "s3cr3t-" + os.urandom(8).hex()
    spec = project / "jobs" / "secret.yaml"
    spec.write_text(
        "name: secret\nimage: hello\nworkload: workloads/hello\n"
        "run: python3 -c \"import os; print('LEN', len(os.environ['MY_TOKEN']))\"\n"
        "secrets: [MY_TOKEN]\n"
    )
    env = dict(os.environ, MY_TOKEN=secret)
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/secret.yaml", "--set", f"targets.local.runtime={rt}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"LEN {len(secret)}" in proc.stdout
    missing = launch(project, "run", "jobs/secret.yaml")  # not exported in this shell
    assert missing.returncode == 3 and "MY_TOKEN" in missing.stderr
    needle = secret.encode()
    for root in (launch_home, project):
        for path in root.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), f"secret leaked into {path}"
    for bundle in (launch_home / "bundles").glob("*.tar.gz"):
        import gzip

        assert needle not in gzip.decompress(bundle.read_bytes())


@pytest.mark.parametrize("rt", RUNTIMES)
def test_a_local_input_reaches_the_job_and_a_bad_one_is_refused_before_it_starts(
    rt: str, tmp_path: Path, docker_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    proj = tmp_path / "proj"
    (proj / "workloads" / "reader").mkdir(parents=True)
    (proj / "workloads" / "reader" / "README").write_text("reads its input\n")
    (proj / "data" / "logos").mkdir(parents=True)
    (proj / "data" / "logos" / "a.txt").write_text("from the input\n")
    (proj / "jobs").mkdir()
    (proj / "jobs" / "reader.yaml").write_text(
        "name: reader\nimage: hello\nworkload: workloads/reader\n"
        "inputs: [{path: data/logos, as: logos}]\n"
        "run: python3 -c \"import os; print(open(os.environ['LAUNCH_INPUT_DIR'] + '/logos/a.txt').read())\"\n"
        f"targets: {{local: {{runtime: {rt}}}}}\n"
    )
    shutil.copytree(REPO / "images" / "hello", proj / "images" / "hello")
    ok = launch(proj, "run", "jobs/reader.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "from the input" in ok.stdout

    missing = launch(proj, "run", "jobs/reader.yaml", "--set", "inputs=[{path: data/nope, as: x}]")
    assert missing.returncode != 0 and "data/nope does not exist" in missing.stderr
    kaggle = launch(proj, "run", "jobs/reader.yaml", "--set", "inputs=[{kaggle: a/b, as: x}]")
    assert kaggle.returncode == 3, kaggle.stderr
    assert "Kaggle dataset inputs need Kaggle credentials" in kaggle.stderr
    for proc in (missing, kaggle):
        assert "Traceback" not in proc.stderr
    runs = launch(proj, "ls", "--json")
    assert [r["status"] for r in json.loads(runs.stdout)].count("succeeded") == 1
