"""How the Colab target reads a session from its Drive folder, with the folder's files written
here (as the notebook would) into the Drive emulator: real pydrive2, real HTTP, no notebook."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.drive import DriveSim
from launcher.targets.base import Phase
from launcher.targets.colab import handle as names
from launcher.targets.colab.handle import ColabHandle
from launcher.targets.colab.target import ColabTarget, home_key


@pytest.fixture()
def target(
    drive: DriveSim, launch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ColabTarget]:
    creds = launch_home / "creds.json"
    creds.write_text(json.dumps(drive.user_credentials()))
    monkeypatch.setenv("LAUNCH_DRIVE_URL", drive.url)
    monkeypatch.setenv("LAUNCH_COLAB_CREDENTIALS", str(creds))
    monkeypatch.setenv("LAUNCH_COLAB_RETRY_S", "0.01")
    t = ColabTarget(launch_home)
    t.poll_s = 0.0
    yield t


def session(t: ColabTarget, run_id: str, **kw: object) -> tuple[ColabHandle, str]:
    """A session folder with its run/ folder; the handle and run/'s id."""
    title = names.folder_title(run_id, 1)
    about = names.folder_description(run_id, 1, home_key(t.home))
    folder = t.drive.create_folder(title, t._root(), about)  # pyright: ignore[reportPrivateUsage]
    run = t.drive.create_folder(names.RUN_DIR, folder)
    fields: dict[str, object] = dict(
        run_id=run_id, folder_title=title, folder_id=folder, link="http://colab/drive/nb",
        submitted_at=time.time(), lost_after_s=1.5,
    )  # fmt: skip
    fields.update(kw)
    return ColabHandle.model_validate(fields), run


def put(t: ColabTarget, parent: str, name: str, data: object) -> None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    for old in t.drive.children(parent, title=name):
        t.drive.update(old.id, raw)
        return
    t.drive.upload(parent, name, raw, "application/json")


def beat(step: str = "running", files: dict[str, list[object]] | None = None) -> dict[str, object]:
    return {
        "at": f"2020-01-01T00:00:{time.time() % 60:06.3f}Z",
        "step": step,
        "files": files or {},
    }


def test_waiting_then_failed_when_nobody_opens_the_link(target: ColabTarget) -> None:
    h, _run = session(target, "wait-1")
    st = target.status(h)
    assert (
        st.phase is Phase.QUEUED and st.message == "waiting for you to open http://colab/drive/nb"
    )
    late = h.model_copy(update={"submitted_at": time.time() - 100, "open_within_s": 50})
    st = target.status(late)
    assert st.phase is Phase.FAILED and "nobody opened" in st.message


def test_a_heartbeat_from_a_skewed_clock_is_alive_while_it_changes_and_lost_when_it_stops(
    target: ColabTarget,
) -> None:
    """The notebook's clock says 2020: what counts is that its heartbeat keeps changing."""
    h, run = session(target, "skew-1")
    for _ in range(3):
        put(target, run, names.HEARTBEAT_FILE, beat("installing"))
        assert target.status(h).phase is Phase.STARTING
        time.sleep(0.6)
    time.sleep(2.0)  # nothing new for longer than lost_after_s
    st = target.status(h)
    assert st.phase is Phase.LOST and "stopped answering" in st.message


def test_the_end_is_read_only_once_every_file_the_notebook_sent_is_in_drive(
    target: ColabTarget,
) -> None:
    h, run = session(target, "end-1")
    status = {"phase": "exited", "exit_code": 0, "started_at": "2026-01-01T00:00:00.000Z",
              "ended_at": "2026-01-01T00:00:09.000Z"}  # fmt: skip
    put(target, run, "status.json", status)
    manifest: dict[str, list[object]] = {
        "outputs/model.bin": [5, 1, "5d41402abc4b2a76b9719d911017c592"]
    }
    put(target, run, names.HEARTBEAT_FILE, beat("ended", manifest))
    st = target.status(h)  # the manifest's file has not arrived
    assert st.phase is Phase.RUNNING and "on their way" in st.message
    outputs = target.drive.create_folder("outputs", run)
    put(target, outputs, "model.bin", b"hello")  # md5 5d41402a...
    st = target.status(h)
    assert st.phase is Phase.DONE and st.exit_code == 0


def test_an_end_whose_files_never_arrive_is_taken_after_the_wait_and_the_folder_kept(
    target: ColabTarget,
) -> None:
    h, run = session(target, "end-2")
    put(target, run, "status.json", {"phase": "exited", "exit_code": 0})
    put(target, run, names.HEARTBEAT_FILE, beat("ended", {"outputs/x": [1, 1, "00"]}))
    assert target.status(h).phase is Phase.RUNNING
    time.sleep(1.7)
    assert target.status(h).phase is Phase.DONE
    target.cleanup(h)  # the notebook is quiet now: nothing more will come, the folder may go
    assert target.drive.get(h.folder_id or "") is not None
    assert target.drive.get(h.folder_id or "").trashed  # type: ignore[union-attr]


def test_a_notebook_that_ended_without_the_jobs_status_fails_the_attempt(
    target: ColabTarget,
) -> None:
    h, run = session(target, "end-3")
    put(target, run, names.HEARTBEAT_FILE, beat("ended", {}))
    st = target.status(h)
    assert st.phase is Phase.FAILED and "without the job's status" in st.message


def test_drive_out_of_reach_keeps_the_last_answer_then_loses_the_session(
    target: ColabTarget, drive: DriveSim
) -> None:
    h, run = session(target, "net-1")
    put(target, run, "status.json", {"phase": "running", "pid": 1})
    put(target, run, names.HEARTBEAT_FILE, beat())
    assert target.status(h).phase is Phase.RUNNING
    drive.faults.add(503, "backendError", count=10_000)
    try:
        st = target.status(h)
        assert st.phase is Phase.RUNNING and "Drive unreachable" in st.message
        time.sleep(1.7)
        st = target.status(h)
        assert st.phase is Phase.LOST and "unreachable" in st.message
    finally:
        drive.faults.clear()


def test_gc_sees_only_this_homes_folders_that_were_not_kept(target: ColabTarget) -> None:
    mine, _ = session(target, "gc-1")
    kept, _ = session(target, "gc-2", keep=True)
    target.cleanup(kept)  # keep: described as kept, left in Drive
    root = target._root()  # pyright: ignore[reportPrivateUsage]
    other = names.folder_description("gc-3", 1, "0123456789abcdef")
    target.drive.create_folder(names.folder_title("gc-3", 1), root, other)
    target.drive.create_folder("backup-s1", root)  # the user's own folder, a launch-like name
    found = {run for _id, run, _state in target.labelled()}
    assert "gc-1" in found and not found & {"gc-2", "gc-3", "backup"}
    assert mine.folder_id in {i for i, _r, _s in target.labelled()}
