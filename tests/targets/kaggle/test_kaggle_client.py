"""Credentials as the kaggle CLI finds them, token auth through IntrospectToken, refused keys,
and the retries the official client does not do (against the sim: real HTTP, real kagglesdk)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.errors import TargetError, TargetUnavailableError
from launcher.sim.kaggle import KaggleSim
from launcher.targets.kaggle.client import Credentials, KaggleClient, find_credentials
from launcher.targets.kaggle.target import KaggleTarget

TOKEN = "KGAT_0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def api_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaggleSim]:
    """A sim for API calls only (no kernel runs here)."""
    with KaggleSim(
        runtime="process", tokens={TOKEN: "alice"}, data_dir=tmp_path_factory.mktemp("api-sim")
    ) as s:
        yield s


@pytest.fixture
def no_kaggle_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_credentials_come_from_where_the_kaggle_cli_looks(
    no_kaggle_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TargetUnavailableError) as missing:
        find_credentials()
    assert "https://www.kaggle.com/settings" in (missing.value.hint or "")
    assert not KaggleTarget.check().ok

    cfg = no_kaggle_env / "cfg"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text(json.dumps({"username": "alice", "key": "k1"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(cfg))
    assert find_credentials() == Credentials("alice", key="k1", source=str(cfg / "kaggle.json"))
    assert KaggleTarget.check().ok

    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "k2")
    assert (find_credentials().username, find_credentials().key) == ("bob", "k2")

    token_file = no_kaggle_env / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
    assert find_credentials().token == TOKEN  # a token wins, as in the CLI

    (cfg / "kaggle.json").write_text("{not json")
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(TargetUnavailableError, match="is not a kaggle.json"):
        find_credentials()


def test_a_token_gets_its_user_name_from_introspect_token(api_sim: KaggleSim) -> None:
    client = KaggleClient(Credentials("", token=TOKEN, source="test"), api_sim.url)
    assert client.username == "alice"
    assert "gpu" in client.quota()
    assert "POST /v1/security.OAuthService/IntrospectToken" in api_sim.calls


def test_a_refused_key_says_so_and_names_where_the_key_came_from(api_sim: KaggleSim) -> None:
    client = KaggleClient(Credentials("alice", key="wrong", source="KAGGLE_KEY"), api_sim.url)
    with pytest.raises(
        TargetUnavailableError, match=r"Kaggle refused our credentials \(KAGGLE_KEY\)"
    ):
        client.quota()


def test_429_and_5xx_are_retried_honouring_retry_after_then_given_up(api_sim: KaggleSim) -> None:
    slept: list[float] = []
    client = KaggleClient(
        Credentials("alice", key="0123456789abcdef"), api_sim.url, sleep=slept.append
    )
    api_sim.fail_next_requests(2, 429, retry_after=7)
    assert "gpu" in client.quota()
    assert slept == [7.0, 7.0]
    api_sim.fail_next_requests(2, 503)
    assert "gpu" in client.quota()
    assert len(slept) == 4 and all(0 < s <= 2.0 for s in slept[2:])  # backoff, jittered
    api_sim.fail_next_requests(50, 500)
    try:
        with pytest.raises(TargetError, match="failed after 6 tries: 500"):
            client.quota()
    finally:
        api_sim.fail_next_requests(0)
    gone = KaggleClient(Credentials("alice", key="k"), "http://127.0.0.1:9", sleep=slept.append)
    with pytest.raises(TargetError, match="cannot reach Kaggle at http://127.0.0.1:9"):
        gone.quota()
