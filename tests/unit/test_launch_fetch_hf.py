"""launch_fetch against a Hub-compatible endpoint on 127.0.0.1 (tests/hub.py), and the official
`huggingface_hub` client against the same endpoint, so the endpoint is the Hub's shape."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher import launch_fetch as lf
from tests.hub import Hub
from tests.venvs import cached_venv

HF_HUB_VERSION = "2.4.0"
FILES = {
    "config.json": b'{"dim": 8}\n',
    "model.safetensors": os.urandom(5000),  # LFS: through the CDN
    "sub/tokenizer.txt": b"a b c\n",
}


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    h.put("org/tiny", FILES)
    h.put("org/secret", {"w.bin": os.urandom(3000)}, private=True)
    h.put("org/clips", {"train/a.txt": b"clip\n"}, dataset=True)
    yield h
    h.close()


def quiet(_line: str) -> None:
    pass


def test_a_model_repo_arrives_whole_checked_and_once(hub: Hub, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": hub.url}
    item = {"name": "t2v", "kind": "hf", "repo": "org/tiny"}
    got = lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet, env)
    for path, data in FILES.items():
        assert (tmp_path / "in" / "t2v" / path).read_bytes() == data
    assert got[0].downloaded == sum(len(d) for d in FILES.values())
    sent = hub.sent
    again = lf.fetch_one(item, str(tmp_path / "cache"), quiet, env)
    assert again.cached and hub.sent == sent
    assert any("cursor=" in c for c in hub.api_calls)  # the listing came in pages
    commit = hub.repos[("models", "org/tiny")].sha
    asked = len(hub.api_calls)
    pinned = lf.fetch_one(dict(item, revision=commit), str(tmp_path / "cache"), quiet, env)
    assert pinned.cached and pinned.path == got[0].path
    assert len(hub.api_calls) == asked  # a commit is immutable: nothing is asked at all


def test_a_private_repo_needs_the_token_which_never_reaches_the_cdn(
    hub: Hub, tmp_path: Path
) -> None:
    item = {"name": "w", "kind": "hf", "repo": "org/secret"}
    with pytest.raises(lf.FetchError, match="private or gated: set HF_TOKEN"):
        lf.fetch_one(item, str(tmp_path), quiet, {"HF_ENDPOINT": hub.url})
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token}
    got = lf.fetch_one(item, str(tmp_path), quiet, env)
    assert (Path(got.path) / "w.bin").stat().st_size == 3000
    assert hub.cdn_refused_auth == 0


def test_a_dataset_repo_and_a_corrupted_file(hub: Hub, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": hub.url}
    item = {"name": "c", "kind": "hf", "repo": "org/clips", "repo_type": "dataset"}
    got = lf.fetch_one(item, str(tmp_path / "cache"), quiet, env)
    assert (Path(got.path) / "train" / "a.txt").read_bytes() == b"clip\n"
    [blob] = [k for k, v in hub.blobs.items() if v == FILES["model.safetensors"]]
    hub.blobs[blob] = b"x" * 5000  # the CDN now serves other bytes than the Hub lists
    with pytest.raises(
        lf.FetchError, match="model.safetensors arrived with hash .* the Hub lists"
    ):
        lf.fetch_one(
            {"name": "t", "kind": "hf", "repo": "org/tiny"}, str(tmp_path / "c2"), quiet, env
        )
    with pytest.raises(lf.FetchError, match="does not exist"):
        lf.fetch_one({"name": "n", "kind": "hf", "repo": "org/none"}, str(tmp_path), quiet, env)


def test_a_run_pins_the_commit_and_the_dataset_version_it_starts_with(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher.inputs import InputWays, Way, pin_versions, resolve
    from launcher.spec import load_spec

    (tmp_path / "workloads" / "j").mkdir(parents=True)
    (tmp_path / "workloads" / "j" / "run.py").write_text("")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "j.yaml").write_text(
        "name: j\nrun: x\ninputs: [{hf: org/tiny, as: m}, {hf: org/tiny, revision: "
        + "a" * 40
        + ", as: fixed}]\n"
    )
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    spec = load_spec(tmp_path / "jobs" / "j.yaml")
    res = resolve(spec, InputWays(hf=(Way.FETCH_THERE,)), "test")
    pin_versions(res)
    pinned = {d.name: d.fetch.revision for d in res.deliveries if d.fetch}
    assert pinned == {"m": hub.repos[("models", "org/tiny")].sha, "fixed": "a" * 40}
    assert len(hub.api_calls) == 1  # the branch was asked about; the commit was not


def test_the_official_client_downloads_from_the_same_endpoint(hub: Hub, tmp_path: Path) -> None:
    python = cached_venv(
        "huggingface-hub", [f"huggingface_hub=={HF_HUB_VERSION}"], what="huggingface_hub from PyPI"
    )
    code = (
        "import json, sys; from huggingface_hub import snapshot_download; "
        "p = snapshot_download(sys.argv[1], local_dir=sys.argv[2]); print(json.dumps(p))"
    )
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1")  # fmt: skip
    env.pop("HF_TOKEN", None)
    proc = subprocess.run(
        [str(python), "-c", code, "org/tiny", str(tmp_path / "snap")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = Path(json.loads(proc.stdout.strip().splitlines()[-1]))
    for path, data in FILES.items():
        assert (out / path).read_bytes() == data
