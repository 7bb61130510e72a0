"""Conformance of CancelKernelSession: the official kagglesdk client (the launcher's own) against
the Kaggle sim. The request names a kernel SESSION id (kagglesdk's
ApiCancelKernelSessionRequest.kernel_session_id); SaveKernel answers a kernel id, which is not
one, and Kaggle answers a cancel of an id it does not know with 404 Not found. The sim accepted
the kernel id once, which let a launcher that sent it pass every test while its cancels never
reached a kernel on Kaggle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kagglesdk import KaggleClient, kaggle_env
from kagglesdk.kernels.types.kernels_api_service import (
    ApiCancelKernelSessionRequest,
    ApiDeleteKernelRequest,
    ApiGetKernelSessionStatusRequest,
    ApiSaveKernelRequest,
)

from launcher.sim.kaggle import KaggleSim

USER, KEY = "alice", "0123456789abcdef"

# says what Kaggle told it in its container name, then saves on SIGTERM, as a job does
SCRIPT = """\
import os, signal, sys, time
def saved(*_):
    open("saved.txt", "w").write("saved on SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, saved)
print("name=" + os.environ["KAGGLE_CONTAINER_NAME"], flush=True)
time.sleep(120)
"""


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KaggleSim, object]]:
    with KaggleSim(runtime="process", queue_seconds=0, grace_seconds=10, data_dir=tmp_path) as s:
        # the documented way to point the unchanged client at another endpoint (reference §1.1 C)
        monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.PROD, s.url)  # pyright: ignore[reportPrivateUsage]
        with KaggleClient(env=kaggle_env.KaggleEnv.PROD, username=USER, password=KEY) as c:
            yield s, c.kernels.kernels_api_client


def push(api: object, slug: str) -> int:
    req = ApiSaveKernelRequest()
    req.slug, req.new_title, req.text = f"{USER}/{slug}", slug, SCRIPT
    req.language, req.kernel_type, req.is_private = "python", "script", True
    return int(api.save_kernel(req).kernel_id)  # type: ignore[attr-defined]


def said_name(sim: KaggleSim, slug: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in list(sim.latest_session(USER, slug).log):
            if e["data"].startswith("name="):
                return str(e["data"][len("name=") :].strip())
        time.sleep(0.05)
    raise AssertionError(f"{slug} never said its container name")


def cancel(api: object, session_id: int) -> str:
    req = ApiCancelKernelSessionRequest()
    req.kernel_session_id = session_id
    return str(api.cancel_kernel_session(req).error_message)  # type: ignore[attr-defined]


def status(api: object, slug: str) -> str:
    req = ApiGetKernelSessionStatusRequest()
    req.user_name, req.kernel_slug = USER, slug
    return str(api.get_kernel_session_status(req).status.name)  # type: ignore[attr-defined]


def test_cancel_refuses_the_kernel_id_and_stops_the_session_its_id_names(
    sdk: tuple[KaggleSim, object],
) -> None:
    sim, api = sdk
    kernel_id = push(api, "to-cancel")
    name = said_name(sim, "to-cancel")
    session = sim.latest_session(USER, "to-cancel")
    # the session id is known inside the kernel only: the last all-digit part of its name
    session_id = int([p for p in name.split("-") if p.isdigit()][-1])
    assert session_id == session.id != kernel_id

    with pytest.raises(requests.HTTPError) as refused:
        cancel(api, kernel_id)  # what SaveKernel answered: a kernel id, not a session's
    assert refused.value.response is not None and refused.value.response.status_code == 404
    assert "Not found" in str(refused.value)
    assert status(api, "to-cancel") == "RUNNING"

    assert cancel(api, session_id) == ""
    assert sim.wait(USER, "to-cancel", timeout=30).status == "CANCEL_ACKNOWLEDGED"
    assert (session.working / "saved.txt").read_text() == "saved on SIGTERM"
    assert status(api, "to-cancel") == "CANCEL_ACKNOWLEDGED"


def test_cancel_of_an_unknown_or_deleted_kernels_session_is_not_found(
    sdk: tuple[KaggleSim, object],
) -> None:
    sim, api = sdk
    push(api, "to-delete")
    said_name(sim, "to-delete")
    session_id = sim.latest_session(USER, "to-delete").id
    with pytest.raises(requests.HTTPError, match="Not found"):
        cancel(api, 424242)
    delete = ApiDeleteKernelRequest()
    delete.user_name, delete.kernel_slug = USER, "to-delete"
    api.delete_kernel(delete)  # type: ignore[attr-defined]
    with pytest.raises(requests.HTTPError, match="Not found") as gone:
        cancel(api, session_id)
    assert gone.value.response is not None and gone.value.response.status_code == 404
