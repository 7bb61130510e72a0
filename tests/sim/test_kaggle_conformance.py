"""Conformance: the real, unchanged `kaggle` 2.2.5 CLI works against the Kaggle sim.

The CLI is installed by the test setup into its own virtualenv (cached under
``$LAUNCH_CACHE/test-venvs``; kaggle imports ``six`` without declaring it, so six is installed too).

How the unchanged client is pointed at the sim (reference §1.1, method B): only environment
variables. ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes the CLI build its client for
``http://localhost/api/v1/...`` (`build_kaggle_client_with_params`), and ``HTTP_PROXY`` sends those
requests to the sim, which accepts absolute-form request lines. Nothing of the client is patched,
no port 80 or root is needed, and the upload/output URLs the sim hands out reach it the same way.
Method C (a ``sitecustomize.py`` that repoints ``kagglesdk.kaggle_env``'s PROD endpoint, giving
``/v1/...`` paths), with Bearer-token auth and ``IntrospectToken``, is checked by one test too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.kaggle import KaggleSim
from tests.venvs import cached_venv

KAGGLE_VERSION = "2.2.5"
USER, KEY = "alice", "0123456789abcdef"
TOKEN = "KGAT_0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def kaggle_cli() -> Path:
    """The `kaggle` console script of kaggle==2.2.5 in its own virtualenv (built once); kaggle
    imports `six` without declaring it. Run through the venv's python (see `run`)."""
    python = cached_venv(
        "kaggle",
        [f"kaggle=={KAGGLE_VERSION}", "six"],
        what="these tests need PyPI or a local mirror",
    )
    return python.parent / "kaggle"


@pytest.fixture(scope="module")
def sim(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaggleSim]:
    s = KaggleSim(
        image=base_image,
        runtime="docker",
        queue_seconds=0.3,
        grace_seconds=2,
        tokens={TOKEN: USER},
        data_dir=tmp_path_factory.mktemp("kaggle-sim"),
    )
    with s:
        yield s


@pytest.fixture
def cli_env(sim: KaggleSim, tmp_path: Path) -> dict[str, str]:
    """Method B: the unchanged CLI, a throwaway HOME/KAGGLE_CONFIG_DIR, legacy key from env."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP"))}
    (tmp_path / "home").mkdir()
    (tmp_path / "kaggle-config").mkdir()
    env.update(
        HOME=str(tmp_path / "home"),
        KAGGLE_CONFIG_DIR=str(tmp_path / "kaggle-config"),
        KAGGLE_USERNAME=USER,
        KAGGLE_KEY=KEY,
        KAGGLE_API_ENVIRONMENT="LOCALHOST",
        HTTP_PROXY=sim.url,
        http_proxy=sim.url,
        NO_PROXY="",
        no_proxy="",
        TMPDIR=str(tmp_path),
    )
    return env


def run(cli: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    python = cli.parent / "python"
    return subprocess.run(
        [str(python), str(cli), *args], env=env, capture_output=True, text=True, timeout=120
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def make_dataset(root: Path, slug: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    meta = {
        "title": slug.replace("-", " "),
        "id": f"{USER}/{slug}",
        "licenses": [{"name": "CC0-1.0"}],
    }
    (root / "dataset-metadata.json").write_text(json.dumps(meta))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def make_kernel(root: Path, slug: str, code: str, **meta: object) -> Path:
    root.mkdir(parents=True)
    (root / "run.py").write_text(code)
    metadata = {
        "id": f"{USER}/{slug}",
        "title": slug.replace("-", " "),
        "code_file": "run.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        **meta,
    }
    (root / "kernel-metadata.json").write_text(json.dumps(metadata))
    return root


def wait_status(cli: Path, env: dict[str, str], ref: str, want: str, timeout: float = 90) -> str:
    deadline = time.time() + timeout
    seen = ""
    while time.time() < deadline:
        seen = ok(run(cli, env, "kernels", "status", ref))
        if want in seen:
            return seen
        assert "ERROR" not in seen and "CANCEL" not in seen, seen
        time.sleep(0.5)
    raise AssertionError(f"{ref} never reached {want}; last: {seen}")


def test_datasets_create_then_version(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    folder = make_dataset(tmp_path / "ds", "conf-data-one", {"a.txt": "first\n"})
    out = ok(run(kaggle_cli, cli_env, "datasets", "create", "-p", str(folder)))
    assert "Your private Dataset is being created" in out
    (folder / "b.txt").write_text("second\n")
    out = ok(run(kaggle_cli, cli_env, "datasets", "version", "-p", str(folder), "-m", "add b"))
    assert "Dataset version is being created" in out
    assert (
        ok(run(kaggle_cli, cli_env, "datasets", "status", f"{USER}/conf-data-one")).strip()
        == "ready"
    )

    ds = sim.datasets.find(USER, "conf-data-one")
    assert ds is not None and [v.number for v in ds.versions] == [1, 2]
    assert ds.versions[1].notes == "add b"
    assert sorted(p.name for p in ds.versions[0].path.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in ds.versions[1].path.iterdir()) == ["a.txt", "b.txt"]
    # through the proxy the CLI sends LOCAL-style paths: /api/v1/...
    for rpc in ("GetDatasetStatus", "StartBlobUpload", "CreateDataset", "CreateDatasetVersion"):
        assert any(c.startswith("POST /api/v1/") and c.endswith(rpc) for c in sim.calls), rpc
    assert any(c.startswith("PUT /_emu/upload/") for c in sim.calls)


def test_datasets_download_unzips_what_was_uploaded(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    folder = make_dataset(tmp_path / "ds", "conf-data-down", {"a.txt": "one\n"})
    (folder / "b.csv").write_text("x,y\n")
    ok(run(kaggle_cli, cli_env, "datasets", "create", "-p", str(folder)))
    dest = tmp_path / "down"
    ok(
        run(
            kaggle_cli,
            cli_env,
            "datasets",
            "download",
            "-p",
            str(dest),
            "--unzip",
            f"{USER}/conf-data-down",
        )
    )
    assert (dest / "a.txt").read_text() == "one\n"
    assert (dest / "b.csv").read_text() == "x,y\n"
    assert any(c.endswith("DownloadDataset") for c in sim.calls)
    assert sim.dataset_bytes_served(f"{USER}/conf-data-down") > 0


def test_kernel_push_status_output_logs(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    folder = make_dataset(tmp_path / "ds", "conf-kernel-input", {"words.txt": "kaggle sim\n"})
    ok(run(kaggle_cli, cli_env, "datasets", "create", "-p", str(folder)))
    code = (
        "import os, pathlib, time\n"
        "text = pathlib.Path('/kaggle/input/conf-kernel-input/words.txt').read_text()\n"
        "print('read', text.strip(), flush=True)\n"
        "time.sleep(2)\n"
        "os.makedirs('/kaggle/working/results', exist_ok=True)\n"
        "pathlib.Path('/kaggle/working/results/upper.txt').write_text(text.upper())\n"
        "print('wrote', os.getcwd())\n"
    )
    kdir = make_kernel(
        tmp_path / "k",
        "conf-job",
        code,
        enable_gpu=True,
        dataset_sources=[f"{USER}/conf-kernel-input"],
    )
    out = ok(run(kaggle_cli, cli_env, "kernels", "push", "-p", str(kdir)))
    assert "Kernel version 1 successfully pushed." in out

    # the live log stream (SSE) while it runs, ending on END_OF_LOG
    follow = ok(run(kaggle_cli, cli_env, "kernels", "logs", f"{USER}/conf-job", "--follow"))
    assert "read kaggle sim" in follow and "wrote /kaggle/working" in follow
    wait_status(kaggle_cli, cli_env, f"{USER}/conf-job", "KernelWorkerStatus.COMPLETE")

    out_dir = tmp_path / "out"
    ok(run(kaggle_cli, cli_env, "kernels", "output", f"{USER}/conf-job", "-p", str(out_dir)))
    assert (out_dir / "results" / "upper.txt").read_text() == "KAGGLE SIM\n"
    log = json.loads((out_dir / "conf-job.log").read_text())
    assert [e["data"] for e in log if e["stream_name"] == "stdout"][0] == "read kaggle sim\n"
    assert "read kaggle sim" in ok(run(kaggle_cli, cli_env, "kernels", "logs", f"{USER}/conf-job"))
    assert any(c.startswith("GET /_emu/output/") for c in sim.calls)


def test_quota_shows_usage(kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim) -> None:
    sim.set_quota(user=USER, gpu_seconds=30 * 3600, gpu_used=3600)
    out = ok(run(kaggle_cli, cli_env, "quota"))
    gpu = next(line.split() for line in out.splitlines() if line.startswith("GPU"))
    assert gpu[1:4] == ["1.00h", "29.00h", "30.00h"], out
    assert any(c.endswith("/GetAcceleratorQuotaStatistics") for c in sim.calls)
    sim.set_quota(user=USER, gpu_used=0)


def test_rejected_push_prints_error_and_exits_zero(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    sim.reject_next_push("Maximum weekly GPU quota reached")
    kdir = make_kernel(tmp_path / "k", "conf-rejected", "print('never runs')\n")
    proc = run(kaggle_cli, cli_env, "kernels", "push", "-p", str(kdir))
    assert "Kernel push error: Maximum weekly GPU quota reached" in proc.stdout
    # the CLI exits 0 on a server-side rejection (reference §0, gotcha 2): callers must parse it
    assert proc.returncode == 0
    status = run(kaggle_cli, cli_env, "kernels", "status", f"{USER}/conf-rejected")
    assert status.returncode == 1 and "Not found" in status.stdout + status.stderr


def test_interrupted_upload_is_resumed_by_the_cli(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    payload = "".join(f"line {i}\n" for i in range(200))
    folder = make_dataset(tmp_path / "ds", "conf-resumed-upload", {"big.txt": payload})
    sim.interrupt_next_upload(after_bytes=100)
    ok(run(kaggle_cli, cli_env, "datasets", "create", "-p", str(folder)))
    ds = sim.datasets.find(USER, "conf-resumed-upload")
    assert ds is not None
    assert (ds.versions[0].path / "big.txt").read_text() == payload
    puts = [c for c in sim.calls if c.startswith("PUT /_emu/upload/")]
    assert len(puts) >= 3  # the cut PUT, the "bytes */N" probe, the rest from byte 100


def test_token_auth_through_sitecustomize_shim(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    """Method C: PROD endpoint repointed in-process; Bearer token + IntrospectToken."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('KAGGLE_EMU_ENDPOINT'):\n"
        "    from kagglesdk import kaggle_env\n"
        "    kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.PROD] = os.environ['KAGGLE_EMU_ENDPOINT']\n"
    )
    env = {
        k: v
        for k, v in cli_env.items()
        if k not in ("KAGGLE_API_ENVIRONMENT", "KAGGLE_USERNAME", "KAGGLE_KEY")
    }
    env.update(
        HTTP_PROXY="",
        http_proxy="",
        PYTHONPATH=str(shim),
        KAGGLE_EMU_ENDPOINT=sim.url,
        KAGGLE_API_TOKEN=TOKEN,
    )
    before = len(sim.calls)
    out = ok(run(kaggle_cli, env, "quota"))
    assert out.splitlines()[0].split()[:2] == ["resource", "used"]
    new = sim.calls[before:]
    assert "POST /v1/security.OAuthService/IntrospectToken" in new
    assert "POST /v1/kernels.KernelsApiService/GetAcceleratorQuotaStatistics" in new


def test_quick_save_list_pull_and_delete(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    kdir = make_kernel(tmp_path / "k", "conf-saved-only", "print('saved, not run')\n")
    out = ok(run(kaggle_cli, cli_env, "kernels", "push", "-p", str(kdir), "--no-run"))
    assert "Kernel version 1 successfully saved without running." in out
    status = ok(run(kaggle_cli, cli_env, "kernels", "status", f"{USER}/conf-saved-only"))
    assert "KernelWorkerStatus.NEW_SCRIPT" in status
    listed = ok(run(kaggle_cli, cli_env, "kernels", "list", "--mine", "-s", "saved-only"))
    assert f"{USER}/conf-saved-only" in listed

    pulled = tmp_path / "pulled"
    ok(
        run(
            kaggle_cli,
            cli_env,
            "kernels",
            "pull",
            f"{USER}/conf-saved-only",
            "-p",
            str(pulled),
            "-m",
        )
    )
    assert (pulled / "conf-saved-only.py").read_text() == "print('saved, not run')\n"
    meta = json.loads((pulled / "kernel-metadata.json").read_text())
    assert meta["id"] == f"{USER}/conf-saved-only" and meta["is_private"] is True

    ok(run(kaggle_cli, cli_env, "kernels", "delete", f"{USER}/conf-saved-only", "-y"))
    gone = run(kaggle_cli, cli_env, "kernels", "status", f"{USER}/conf-saved-only")
    assert gone.returncode == 1 and "Not found" in gone.stdout + gone.stderr


def test_push_timeout_ends_in_error_with_failure_message(
    kaggle_cli: Path, cli_env: dict[str, str], sim: KaggleSim, tmp_path: Path
) -> None:
    """`kernels push -t SEC` sets sessionTimeoutSeconds; the sim stops the run at that cap."""
    kdir = make_kernel(
        tmp_path / "k", "conf-timeout", "import time\nprint('up')\ntime.sleep(120)\n"
    )
    ok(run(kaggle_cli, cli_env, "kernels", "push", "-p", str(kdir), "-t", "2"))
    sim.wait(USER, "conf-timeout", timeout=60)
    out = ok(run(kaggle_cli, cli_env, "kernels", "status", f"{USER}/conf-timeout"))
    assert 'has status "KernelWorkerStatus.ERROR"' in out
    assert 'Failure message: "Session timed out: the session limit of 2 seconds' in out


def test_sdk_in_process_with_repointed_endpoint(kaggle_cli: Path, sim: KaggleSim) -> None:
    """What a launcher's client does: patch the PROD endpoint, then build a KaggleClient."""
    snippet = (
        "import sys\n"
        "from kagglesdk import kaggle_env\n"
        "kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.PROD] = sys.argv[1]\n"
        "from kagglesdk import KaggleClient\n"
        "from kagglesdk.kernels.types.kernels_api_service import (\n"
        "    ApiGetAcceleratorQuotaStatisticsRequest)\n"
        "with KaggleClient(env=kaggle_env.KaggleEnv.PROD, username=sys.argv[2],\n"
        "                  password=sys.argv[3]) as c:\n"
        "    r = c.kernels.kernels_api_client.get_accelerator_quota_statistics(\n"
        "        ApiGetAcceleratorQuotaStatisticsRequest())\n"
        "print(r.gpu_quota.total_time_allowed.total_seconds(), r.quota_refresh_time.weekday())\n"
    )
    proc = subprocess.run(
        [str(kaggle_cli.parent / "python"), "-c", snippet, sim.url, USER, KEY],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(30 * 3600.0), "5"]  # 30 h; refreshes on a Saturday
