"""A Kaggle session is started once and stopped for real (against the sim: real HTTP, the real
kagglesdk, kernels running as local processes):

- a push whose answer is lost after Kaggle made the session is adopted, never pushed again (a
  second push is a second session, spending the quota twice);
- a cancel goes to the session id the kernel said, not the kernel id; one Kaggle refuses is an
  error, and cleanup keeps a kernel whose outputs have not come home, naming the commands that
  finish (`launch pull`, then `launch gc`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import TargetError
from launcher.sim.kaggle import KaggleSim
from launcher.sim.kaggle.runner import Session
from launcher.targets.kaggle.client import Credentials, KaggleClient
from launcher.targets.kaggle.handle import KaggleHandle
from launcher.targets.kaggle.target import KaggleTarget

USER, KEY = "alice", "0123456789abcdef"

# a job as the generated kernel runs it: says its session id first (kernel.py), saves on SIGTERM
JOB = """\
import os, signal, sys, time
name = os.environ["KAGGLE_CONTAINER_NAME"]
sys.stderr.write("[agent] kaggle: kernel session %s\\n" % [p for p in name.split("-") if p.isdigit()][-1])
sys.stderr.flush()
def saved(*_):
    open("ckpt.txt", "w").write("saved on SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, saved)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KaggleSim]:
    with KaggleSim(
        runtime="process", queue_seconds=0, grace_seconds=10, data_dir=tmp_path / "sim"
    ) as s:
        yield s


def client_of(sim: KaggleSim, notes: list[str]) -> KaggleClient:
    return KaggleClient(
        Credentials(USER, key=KEY), sim.url, sleep=lambda _s: None, notify=notes.append
    )


def push(client: KaggleClient, slug: str, source: str = "print('hi')\n") -> Any:
    return client.save_kernel(
        f"{USER}/{slug}",
        title=slug,
        source=source,
        accelerator=None,
        internet=False,
        sources=[],
        timeout_s=600,
    )


def sessions_of(sim: KaggleSim, slug: str) -> list[Session]:
    return [s for s in sim.kernels.sessions() if s.slug == slug]


def kernels(sim: KaggleSim) -> list[str]:
    return [k["slug"] for k in sim.kernels.list_kernels(USER, {"group": "PROFILE"})["kernels"]]


def test_a_push_whose_answer_is_lost_after_kaggle_made_the_session_is_not_repeated(
    sim: KaggleSim,
) -> None:
    notes: list[str] = []
    client = client_of(sim, notes)
    sim.fail_next_push("lost", 502)
    pushed = push(client, "launch-lost")
    assert len(sessions_of(sim, "launch-lost")) == 1  # a blind retry made two
    assert (pushed.version, pushed.error) == (1, "")
    assert pushed.kernel_id == sim.kernels.kernel(USER, USER, "launch-lost").id
    assert "answer to the push of alice/launch-lost was lost (502" in notes[0]
    assert "made version 1: using that one, not pushing again" in notes[0]

    # refused before Kaggle made anything: pushed again, once
    sim.fail_next_push("error", 503)
    again = push(client, "launch-refused")
    assert (again.version, len(sessions_of(sim, "launch-refused"))) == (1, 1)

    # a kernel with versions already: only a newer one is the lost push's
    sim.fail_next_push("lost", 500)
    newer = push(client, "launch-refused")
    assert (newer.version, len(sessions_of(sim, "launch-refused"))) == (2, 2)

    # a push that keeps failing before Kaggle acts is given up, saying how often it was tried
    sim.fail_next_requests(50, 500, method="SaveKernel")
    try:
        with pytest.raises(TargetError, match="SaveKernel failed after 6 tries: 500"):
            push(client, "launch-never")
    finally:
        sim.fail_next_requests(0)
    assert sessions_of(sim, "launch-never") == []


def handle_of(slug: str, kernel_id: int | None) -> KaggleHandle:
    return KaggleHandle(
        run_id="job-abc123",
        attempt=1,
        price_per_hour=Decimal(0),
        owner=USER,
        kernel_slug=slug,
        kernel_id=kernel_id,
        bundle_ref=f"{USER}/launch-bundle-job/versions/1",
        pushed_at=time.time(),
    )


def wait_said(sim: KaggleSim, slug: str, what: str) -> None:
    deadline = time.time() + 60
    while not any(e["data"] == what for e in list(sim.latest_session(USER, slug).log)):
        assert time.time() < deadline, f"{slug} never said {what!r}"
        time.sleep(0.05)


def test_a_refused_cancel_is_an_error_and_no_kernel_goes_before_its_outputs_came_home(
    sim: KaggleSim, tmp_path: Path
) -> None:
    notes: list[str] = []
    client = client_of(sim, notes)
    target = KaggleTarget(tmp_path / "home", notes.append, client=client)
    target.poll_s = 0.0
    slug = "launch-job-abc123-s1"
    h = handle_of(slug, push(client, slug, JOB).kernel_id)
    wait_said(sim, slug, "ready\n")
    session = sim.latest_session(USER, slug)

    # the kernel id, as the launcher used to send: Kaggle refuses it, and that is an error
    wrong = h.model_copy(update={"kernel_session_id": h.kernel_id})
    with pytest.raises(TargetError, match=r"did not cancel session 1001 .*404 Not found"):
        target.cancel(wrong)
    assert session.status == "RUNNING"
    with pytest.raises(TargetError) as kept:
        target.cleanup(wrong)
    assert "kept kernel alice/launch-job-abc123-s1 on Kaggle: its session is still running" in (
        kept.value.message
    )
    hint = kept.value.hint or ""
    assert "`launch pull job-abc123`" in hint and "then `launch gc`" in hint
    assert slug in kernels(sim)

    # the id the kernel said, stored in the handle: the cancel lands, the job saves and stops
    found = target.advance(None, h, None)  # type: ignore[arg-type]
    assert found is not None and found.kernel_session_id == session.id != h.kernel_id
    target.cancel(found)
    assert sim.wait(USER, slug, timeout=30).status == "CANCEL_ACKNOWLEDGED"

    # its outputs cannot be fetched now: kept, with the commands that finish
    sim.fail_next_requests(50, 500, method="ListKernelSessionOutput")
    try:
        with pytest.raises(TargetError, match="its outputs could not be fetched") as kept:
            target.cleanup(found)
        assert "`launch pull job-abc123`" in (kept.value.hint or "")
        with pytest.raises(TargetError, match="kept kernel"):  # `launch gc` keeps it too
            target.release_resource("kernel", f"{USER}/{slug}", {})
    finally:
        sim.fail_next_requests(0)
    assert slug in kernels(sim)

    # `launch pull` brings them home; then the kernel goes
    pulled = target.pull(found, tmp_path / "run")
    assert pulled is not None
    target.release_resource("kernel", f"{USER}/{slug}", {"title": "launch job-abc123 s1"})
    assert slug not in kernels(sim)
    cache = tmp_path / "home" / "kaggle" / "outputs" / "job-abc123" / slug
    assert (cache / "ckpt.txt").read_text() == "saved on SIGTERM"


def test_a_kernel_not_started_yet_is_deleted_by_cancel(tmp_path: Path) -> None:
    with KaggleSim(runtime="process", queue_seconds=60, data_dir=tmp_path / "sim") as sim:
        notes: list[str] = []
        client = client_of(sim, notes)
        target = KaggleTarget(tmp_path / "home", notes.append, client=client)
        slug = "launch-job-abc123-s1"
        h = handle_of(slug, push(client, slug, JOB).kernel_id)
        assert sim.latest_session(USER, slug).status == "QUEUED"
        target.cancel(h)  # it has said no session id, and saved nothing
        assert slug not in kernels(sim)
        assert "deleted kernel alice/launch-job-abc123-s1: its session had not started" in notes
        target.cleanup(h)  # silent: gone already
