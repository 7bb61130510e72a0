"""The image lowered to what a Kaggle kernel installs, job inputs mounted from Kaggle datasets,
and `launch plan` for Kaggle (shape, session cap, quota, sessions needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.lowering import STACKS, lower
from launcher.sim.kaggle import KaggleSim
from launcher.spec import load_spec
from launcher.targets.kaggle.client import Credentials, KaggleClient
from launcher.targets.kaggle.kernel import kernel_source
from launcher.targets.kaggle.target import KaggleTarget
from tests.targets.kaggle.conftest import KEY, USER, launch, record


def make_image(project: Path, requirements: str, base: str) -> None:
    folder = project / "images" / "reqtest"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(f"ARG BASE_IMAGE={base}\nFROM $BASE_IMAGE\n")
    (folder / "requirements.txt").write_text(requirements)


def test_lowering_reads_pins_and_warns_about_a_cuda_major_kaggle_lacks(tmp_path: Path) -> None:
    make_image(
        tmp_path,
        "# pinned\nsetuptools==66.1.0\nwheel>=0.30  # any recent\n--find-links /wheels\n",
        "nvidia/cuda:11.8.0-runtime-ubuntu22.04",
    )
    folder = tmp_path / "images" / "reqtest"
    low = lower(folder / "requirements.txt", STACKS["kaggle"], gpu=True, image_dir=folder)
    assert [(r["name"], r["op"], r["version"]) for r in low.requirements] == [
        ("setuptools", "==", "66.1.0"),
        ("wheel", ">=", "0.30"),
    ]
    assert low.pip_options == ["--find-links", "/wheels"]
    assert any("CUDA 11" in w and "CUDA 12" in w for w in low.warnings)
    violence_dir = Path(__file__).parents[3] / "images" / "violence"
    violence = lower(
        violence_dir / "requirements.txt", STACKS["kaggle"], gpu=True, image_dir=violence_dir
    )
    assert violence.warnings == [] and violence.problems == []


@pytest.mark.parametrize(
    ("have", "op", "want", "ok"),
    [
        ("66.1.1", "==", "66.1.0", True),  # the same feature release is compatible
        ("66.2.0", "==", "66.1.0", False),
        ("2.13.0", "==", "2.13", True),
        ("2.12.0", "==", "2.13", False),
        ("1.26.4", ">=", "1.24", True),
        ("1.23.0", ">=", "1.24", False),
        ("0.38.4", "", "", True),
        ("2.13.0+cu121", "==", "2.13.0", True),
        ("2.13.1+cu121", ">", "2.13.0", True),
    ],
)
def test_the_kernel_keeps_only_compatible_installed_versions(
    have: str, op: str, want: str, ok: bool
) -> None:
    scope: dict[str, object] = {"__name__": "kernel"}
    exec(kernel_source({"run_id": "x"}), scope)  # noqa: S102 - our own generated source
    assert scope["compatible"](have, op, want) is ok  # type: ignore[operator]


def test_requirements_and_kaggle_inputs_reach_the_kernel(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], tmp_path: Path
) -> None:
    make_image(project, "setuptools==66.1.0\nwheel>=0.30\n", "nvidia/cuda:11.8.0-runtime")
    client = KaggleClient(Credentials(USER, key=KEY), sim.url)
    data = tmp_path / "greeting.txt"
    data.write_text("hello from a dataset\n")
    token = client.upload_blob(data, "greeting.txt")
    made = client.call(
        "datasets",
        "create_dataset",
        {
            "ownerSlug": USER,
            "slug": "hello-data",
            "title": "hello data",
            "files": [{"token": token}],
        },
    )
    assert made["status"] == "Ok"
    run = (
        "python3 -c \"import os; d = os.environ['LAUNCH_INPUT_DIR']; "
        "print('input:', open(os.path.join(d, 'greet', 'greeting.txt')).read().strip())\""
    )
    proc = launch(
        project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle",
        "--set", "image=reqtest", "--set", f"run={run}",
        "--set", 'inputs=[{"kaggle": "alice/hello-data", "as": "greet"}]',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: the image is built for CUDA 11" in proc.stderr
    assert "input: hello from a dataset" in proc.stdout
    log = Path(record(project, kaggle_env)["output_dir"], "logs", "job.log").read_text()
    assert "input: hello from a dataset" in log
    assert "keeping setuptools 66.1.1 (asked setuptools==66.1.0)" in proc.stderr
    assert "keeping wheel 0.38.4 (asked wheel>=0.30)" in proc.stderr


def test_plan_shows_shape_cap_quota_and_sessions_and_refuses_what_cannot_fit(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.set_quota(gpu_seconds=30 * 3600, gpu_used=4 * 3600)
    target = KaggleTarget(home=project, client=KaggleClient(Credentials(USER, key=KEY), sim.url))
    gpu = ["resources.gpu.count=1", "limits.max_hours=20"]
    spec = load_spec(project / "jobs" / "hello.yaml", overrides=gpu)
    plan = target.plan(spec)
    assert plan.runnable, plan
    assert (plan.options[0].name, plan.options[0].gpu, plan.options[0].gpu_count) == (
        "NvidiaTeslaT4",
        "T4",
        2,
    )
    notes = "\n".join(plan.notes)
    assert "session cap 12 h" in notes
    assert "weekly quota: 26.00 h left (4.00 h used)" in notes
    assert "needs 2 session(s), chained" in notes

    no_chain = load_spec(
        project / "jobs" / "hello.yaml", overrides=[*gpu, "targets.kaggle.allow_chaining=false"]
    )
    problems = target.plan(no_chain).problems
    assert any("allow_chaining" in p for p in problems), problems

    sim.set_quota(gpu_used=25 * 3600)
    problems = target.plan(spec).problems
    assert any("only 5.00 h of weekly quota is left" in p for p in problems), problems
    sim.set_quota(gpu_used=0)

    big = load_spec(
        project / "jobs" / "hello.yaml", overrides=[*gpu, "resources.gpu.min_vram_gb=40"]
    )
    assert any("40 GB per GPU" in n for n in target.plan(big).notes)
    cpu = target.plan(load_spec(project / "jobs" / "hello.yaml"))
    assert cpu.runnable and cpu.options[0].name == "CPU"
    assert json.dumps(cpu.model_dump())  # what `launch plan --json` would print


def test_launch_plan_on_kaggle_through_the_cli_starts_nothing(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    before = len(sim.calls)
    proc = launch(project, kaggle_env, "plan", "jobs/hello.yaml", "--target", "kaggle", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == "kaggle" and result["problems"] == []
    assert result["options"][0]["name"] == "CPU"
    assert not any(c.endswith(("/SaveKernel", "/CreateDataset")) for c in sim.calls[before:])
    assert not (project / "runs").exists()


def test_a_torch_pin_kaggles_gpu_cannot_run_is_refused_at_plan_time_with_the_fix(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str]
) -> None:
    """libcem pins torch==2.13.0, whose PyPI wheel is built for CUDA 13; Kaggle's driver runs
    CUDA 12. Asked as written, `plan` and `run` refuse before anything is pushed; the job's own
    requirements-kaggle.txt keeps Kaggle's torch and plans fine."""
    before = len(sim.calls)
    as_built = ("--set", "targets.kaggle.requirements=requirements.txt")
    proc = launch(project, kaggle_env, "plan", "jobs/libcem.yaml", "--target", "kaggle", *as_built)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "torch==2.13.0 installs a build for CUDA 13" in proc.stdout
    assert "download.pytorch.org/whl/cu126" in proc.stdout
    assert "targets.kaggle.requirements" in proc.stdout
    run = launch(
        project, kaggle_env, "run", "jobs/libcem.yaml", "--target", "kaggle", "--profile", "smoke",
        "--set", "resources.gpu.count=1", *as_built,
    )  # fmt: skip
    assert run.returncode == 3 and "CUDA 13" in run.stderr and "Traceback" not in run.stderr
    assert not any(c.endswith(("/SaveKernel", "/CreateDataset")) for c in sim.calls[before:])
    ok = launch(project, kaggle_env, "plan", "jobs/libcem.yaml", "--target", "kaggle", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    notes = json.loads(ok.stdout)["notes"]
    assert any("torch>=2.6: uses Kaggle's own torch" in n for n in notes), notes


def test_a_registry_image_is_lowered_to_what_it_has_installed(
    sim: KaggleSim, project: Path, kaggle_env: dict[str, str], base_image: str, tmp_path: Path
) -> None:
    """Kaggle cannot run `image: <registry image>`: the kernel installs what `pip freeze` finds
    in it (read once, with docker, here). The image here has a package Kaggle's (the sim's)
    lacks and no index has, so the kernel says it tried to install exactly that."""
    import subprocess

    ref = "127.0.0.1:5999/lab/frozen:1"  # a registry-style name; the engine has it already
    build = tmp_path / "frozen"
    build.mkdir()
    site = "/usr/local/lib/python3.11/dist-packages/launch_demo_pkg-1.0.dist-info"
    (build / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN mkdir -p {site} && printf "
        f"'Metadata-Version: 2.1\\nName: launch-demo-pkg\\nVersion: 1.0\\n' > {site}/METADATA\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", ref, str(build)], check=True, capture_output=True
    )
    try:
        proc = launch(
            project, kaggle_env, "run", "jobs/hello.yaml", "--target", "kaggle",
            "--profile", "smoke", "--set", f"image={ref}",
        )  # fmt: skip
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True)
    [lowered] = (Path(kaggle_env["LAUNCH_HOME"]) / "lowered").glob("*.txt")
    assert f"pip freeze of {ref}" in lowered.read_text()
    assert "launch-demo-pkg==1.0" in lowered.read_text().splitlines()
    assert "installing launch-demo-pkg==1.0" in proc.stderr, proc.stdout + proc.stderr
    assert "kaggle: pip: " in proc.stderr  # pip's own lines stream home as they come
    assert proc.returncode == 6 and "pip could not install launch-demo-pkg==1.0" in proc.stderr
