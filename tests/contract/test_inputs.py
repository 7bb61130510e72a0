"""Inputs that travel: one job spec with a Kaggle dataset input runs on local, Vast and Kaggle
with no override of its inputs, and the job sees the same files everywhere.

Each target delivers the input its own way (launcher/inputs.py): the local target downloads it
here once into the input cache and mounts it; a Vast instance downloads it itself (the emulator
gives instances this host's Kaggle emulator, see launcher/sim/egress.py), and so does a Colab
notebook, with the credentials from the user's Colab secrets; Kaggle attaches it as the kernel's
dataset source. What crossed the wire is measured by the Kaggle emulator, which
counts the archive bytes it served.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim
from launcher.sim.kaggle import KaggleSim
from launcher.sim.vast import VastSim
from tests.conftest import launch_cmd
from tests.contract.platforms import KAGGLE_KEY, KAGGLE_USER, Platform

pytestmark = pytest.mark.docker

DATASET = "bob/rwf-mini"
READER = """import hashlib, json, os
root = os.environ["LAUNCH_INPUT_DIR"]
seen = {}
for folder, _dirs, files in os.walk(root, followlinks=True):
    for name in files:
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, root)
        if not rel.startswith("rwf2000" + os.sep):
            continue
        with open(path, "rb") as f:
            seen[rel] = hashlib.sha256(f.read()).hexdigest()
out = os.path.join(os.environ["LAUNCH_OUTPUT_DIR"], "inputs.json")
with open(out, "w") as f:
    json.dump(seen, f, sort_keys=True)
print("read", len(seen), "input files")
def ancestors_hold_key():
    pid = os.getpid()
    while pid > 1:
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if b"KAGGLE_KEY=" in f.read():
                    return True
            with open("/proc/%d/stat" % pid) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False
print("kaggle key in the job's environment:", "KAGGLE_KEY" in os.environ)
print("kaggle key in an ancestor's environment:", ancestors_hold_key())
"""
SPEC = """name: reader
image: hello
workload: workloads/reader
run: python3 read.py
inputs:
  - {kaggle: bob/rwf-mini, as: rwf2000}
limits: {max_hours: 1}
"""


def dataset_files() -> dict[str, bytes]:
    return {
        "train/fight/clip1.txt": b"punch\n" * 50,
        "train/nofight/clip2.txt": b"walk\n" * 40,
        "labels.csv": b"clip1,1\nclip2,0\n",
    }


@pytest.fixture
def kaggle_data(contract_kaggle: KaggleSim, tmp_path: Path) -> KaggleSim:
    if contract_kaggle.datasets.find("bob", "rwf-mini") is None:
        src = tmp_path / "rwf-mini"
        for rel, data in dataset_files().items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        contract_kaggle.seed_dataset(DATASET, src)
    return contract_kaggle


def reader_project(project: Path) -> Path:
    (project / "workloads" / "reader").mkdir(parents=True)
    (project / "workloads" / "reader" / "read.py").write_text(READER)
    (project / "jobs" / "reader.yaml").write_text(SPEC)
    return project


def read_run(
    project: Path, platform: Platform, *sets: str, env: dict[str, str] | None = None
) -> tuple[dict[str, str], subprocess.CompletedProcess[str], Path]:
    """`launch run jobs/reader.yaml` with `--set` overrides: what the job listed, the launcher's
    run, and the run folder."""
    proc = subprocess.run(
        [*launch_cmd(), "run", "jobs/reader.yaml", *platform.args,
         *(x for v in sets for x in ("--set", v))],
        cwd=project, env=env or platform.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run_dir] = sorted((project / "runs").glob("reader-*"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads((run_dir / "outputs" / "inputs.json").read_text()), proc, run_dir


def assert_nowhere(needles: list[bytes], what: str, *roots: Path) -> None:
    """None of `needles` in any file under `roots` (gzip archives read unpacked)."""
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if path.name.endswith(".tar.gz"):
                    data = gzip.decompress(data)
                for needle in needles:
                    assert needle not in data, f"{what} leaked into {path}"


def run_reader(project: Path, platform: Platform, kaggle: KaggleSim) -> dict[str, str]:
    env = dict(
        platform.env,
        LAUNCH_KAGGLE_URL=kaggle.url,
        KAGGLE_USERNAME=KAGGLE_USER,
        KAGGLE_KEY=KAGGLE_KEY,
    )
    listed, proc, run_dir = read_run(project, platform, env=env)
    assert "read 3 input files" in proc.stdout + proc.stderr
    if platform.name in ("vast", "colab"):  # passed for the download alone, not to the job
        assert "kaggle key in the job's environment: False" in proc.stdout
    if platform.name == "vast":  # nor to the agent's: the job could read /proc/<agent>/environ
        assert "kaggle key in an ancestor's environment: False" in proc.stdout
    basic = base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode())
    home = Path(platform.env["LAUNCH_HOME"])
    assert_nowhere([KAGGLE_KEY.encode(), basic], "the Kaggle key", home, run_dir)
    return listed


def expected() -> dict[str, str]:
    return {
        f"rwf2000/{rel}": hashlib.sha256(data).hexdigest() for rel, data in dataset_files().items()
    }


@pytest.mark.parametrize("platform", ["local-process", "vast", "kaggle", "colab"], indirect=True)
def test_one_spec_with_a_kaggle_input_runs_on_every_target_with_the_same_files(
    platform: Platform, project: Path, kaggle_data: KaggleSim, request: pytest.FixtureRequest
) -> None:
    project = reader_project(project)
    if platform.name == "vast":
        vast: VastSim = request.getfixturevalue("contract_vast")
        vast.allow_egress(int(kaggle_data.url.rsplit(":", 1)[1]))
    if platform.name == "colab":  # the user's Colab secrets, which the notebook reads by name
        colab: ColabSim = request.getfixturevalue("contract_colab")
        colab.secrets.update(KAGGLE_USERNAME=KAGGLE_USER, KAGGLE_KEY=KAGGLE_KEY)
    before = kaggle_data.dataset_bytes_served(DATASET)
    assert run_reader(project, platform, kaggle_data) == expected()
    served = kaggle_data.dataset_bytes_served(DATASET) - before
    if platform.name == "kaggle":
        assert served == 0  # attached as the kernel's dataset source: nothing downloaded
    else:
        assert served > 0  # downloaded here (local) or by the instance itself (vast)

    if platform.name == "local-process":  # the input cache: a second run downloads nothing
        again = kaggle_data.dataset_bytes_served(DATASET)
        assert run_reader(project, platform, kaggle_data) == expected()
        assert kaggle_data.dataset_bytes_served(DATASET) == again


class FileServer:
    """Files over HTTP from 127.0.0.1, as a URL input's host."""

    def __init__(self, files: dict[str, bytes]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("platform", ["local-process", "vast", "kaggle"], indirect=True)
def test_a_url_input_with_a_wrong_sha256_fails_clearly_before_the_job_starts(
    platform: Platform, project: Path, request: pytest.FixtureRequest
) -> None:
    weights = b"not the weights you pinned\n" * 1000
    server = FileServer({"/models/weights.bin": weights})
    try:
        if platform.name == "vast":
            vast: VastSim = request.getfixturevalue("contract_vast")
            vast.allow_egress(server.port)
        if platform.name == "kaggle":  # the kernel downloads it itself (internet is on)
            kaggle: KaggleSim = request.getfixturevalue("contract_kaggle")
            kaggle.allow_egress(server.port)
        project = reader_project(project)
        url = f"{server.url}/models/weights.bin"
        pinned = hashlib.sha256(b"the weights you pinned").hexdigest()
        inputs = f"inputs=[{{url: '{url}', sha256: {pinned}}}]"
        proc = subprocess.run(
            [*launch_cmd(), "run", "jobs/reader.yaml", *platform.args, "--set", inputs],
            cwd=project, env=platform.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text
        assert f"input 'weights': {url} has sha256 {hashlib.sha256(weights).hexdigest()}" in text
        assert f"the job spec says {pinned}" in text
        assert "read " not in proc.stdout  # the job never started
        assert "Traceback" not in proc.stderr

        good = f"inputs=[{{url: '{url}', sha256: {hashlib.sha256(weights).hexdigest()}}}]"
        proc = subprocess.run(
            [*launch_cmd(), "run", "jobs/reader.yaml", *platform.args, "--set", good],
            cwd=project, env=platform.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        server.close()


@pytest.mark.parametrize("platform", ["kaggle"], indirect=True)
def test_a_local_folder_goes_to_kaggle_as_a_private_dataset_versioned_only_when_it_changes(
    platform: Platform, project: Path, contract_kaggle: KaggleSim
) -> None:
    project = reader_project(project)
    data = project / "data" / "clips"
    (data / "fight").mkdir(parents=True)
    (data / "fight" / "a.txt").write_text("punch\n")
    (data / "labels.csv").write_text("a,1\n")
    inputs = "inputs=[{path: data/clips, as: rwf2000}]"

    def run() -> tuple[dict[str, str], str]:
        listed, proc, _run_dir = read_run(project, platform, inputs)
        return listed, proc.stderr

    def versions() -> int:
        found = [
            d
            for d in contract_kaggle.datasets._datasets.values()  # pyright: ignore[reportPrivateUsage]
            if d.slug.startswith("launch-input-reader-rwf2000-")
        ]
        assert len(found) == 1, "one private dataset for the input"
        ds = found[0]
        assert ds.is_private
        return len(ds.versions)

    first, _ = run()
    assert first == {
        "rwf2000/fight/a.txt": hashlib.sha256(b"punch\n").hexdigest(),
        "rwf2000/labels.csv": hashlib.sha256(b"a,1\n").hexdigest(),
    }
    assert versions() == 1
    again, err = run()
    assert again == first and versions() == 1
    assert "input 'rwf2000' unchanged: reusing dataset" in err
    (data / "labels.csv").write_text("a,1\nb,0\n")
    changed, _ = run()
    assert changed["rwf2000/labels.csv"] == hashlib.sha256(b"a,1\nb,0\n").hexdigest()
    assert versions() == 2


@pytest.mark.parametrize("platform", ["local-process", "vast", "kaggle", "colab"], indirect=True)
def test_a_private_hub_repository_arrives_checked_on_every_target_with_its_token_kept(
    platform: Platform, project: Path, request: pytest.FixtureRequest
) -> None:
    from tests.hub import Hub

    hub = Hub(token="hf_contract_token_3b8e41f0")
    files = {"config.json": b'{"dim": 8}\n', "model.safetensors": bytes(range(256)) * 20}
    hub.put("org/tiny-t2v", files, private=True)
    try:
        for port in (int(hub.url.rsplit(":", 1)[1]), int(hub.cdn_url.rsplit(":", 1)[1])):
            if platform.name == "vast":
                request.getfixturevalue("contract_vast").allow_egress(port)
            if platform.name == "kaggle":
                request.getfixturevalue("contract_kaggle").allow_egress(port)
        if platform.name == "kaggle":  # the user's Kaggle secret, attached to the kernel
            kaggle: KaggleSim = request.getfixturevalue("contract_kaggle")
            kaggle.set_secret("HF_TOKEN", hub.token, user=KAGGLE_USER)
        if platform.name == "colab":  # the user's Colab secret
            colab: ColabSim = request.getfixturevalue("contract_colab")
            colab.secrets["HF_TOKEN"] = hub.token
        project = reader_project(project)
        inputs = "inputs=[{hf: org/tiny-t2v, as: rwf2000}]"  # the reader lists rwf2000/
        env = dict(platform.env, HF_ENDPOINT=hub.url, HF_TOKEN=hub.token)
        got, _proc, run_dir = read_run(project, platform, inputs, env=env)
        assert got == {f"rwf2000/{k}": hashlib.sha256(v).hexdigest() for k, v in files.items()}
        assert hub.sent == sum(len(v) for v in files.values())  # each byte once
        assert hub.cdn_refused_auth == 0  # the token never went to the CDN
        home = Path(platform.env["LAUNCH_HOME"])
        assert_nowhere([hub.token.encode()], "the Hub token", home, run_dir)
    finally:
        hub.close()


@pytest.mark.parametrize("platform", ["colab"], indirect=True)
def test_a_local_folder_reaches_colab_through_drive_uploaded_once(
    platform: Platform, project: Path, contract_drive: DriveSim
) -> None:
    project = reader_project(project)
    data = project / "data" / "clips"
    (data / "fight").mkdir(parents=True)
    (data / "fight" / "a.txt").write_text("punch\n")
    inputs = "inputs=[{path: data/clips, as: rwf2000}]"

    def run() -> tuple[dict[str, str], str]:
        listed, proc, _run_dir = read_run(project, platform, inputs)
        return listed, proc.stderr

    def packs() -> list[str]:
        return sorted(
            f.title for f in contract_drive.files(trashed=False) if f.title.startswith("input-")
        )

    first, err = run()
    assert first == {"rwf2000/fight/a.txt": hashlib.sha256(b"punch\n").hexdigest()}
    assert "uploaded input 'rwf2000' to My Drive/launch/inputs/" in err
    assert len(packs()) == 1
    again, err = run()
    assert again == first and len(packs()) == 1
    assert "input 'rwf2000' unchanged: reusing" in err
