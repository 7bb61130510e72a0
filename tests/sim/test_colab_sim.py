"""The Colab runtime emulator on its own: a notebook in the Drive emulator, opened through its
link, really runs in a Jupyter kernel with the google.colab stand-in; a session ends as a Colab
VM does (idle, at its cap, on a disconnect) and takes every process in it along."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.colab import ColabSim
from launcher.sim.drive import DriveSim

NOTEBOOK_MIME = "application/vnd.google.colaboratory"


def notebook(*cells: str) -> bytes:
    return json.dumps(
        {
            "nbformat": 4,
            "nbformat_minor": 0,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": c,
                }  # fmt: skip
                for c in cells
            ],
        }
    ).encode()


def upload(drive: DriveSim, title: str, data: bytes, mime: str, parent: str = "root") -> str:
    token = drive.access_token()
    req = urllib.request.Request(
        f"{drive.url}/upload/drive/v2/files?uploadType=media", data=data, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": mime},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        file_id = str(json.loads(r.read())["id"])
    meta = json.dumps({"title": title, "mimeType": mime, "parents": [{"id": parent}]}).encode()
    patch = urllib.request.Request(
        f"{drive.url}/drive/v2/files/{file_id}", data=meta, method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(patch, timeout=30).read()
    return file_id


@pytest.fixture()
def drive() -> Iterator[DriveSim]:
    with DriveSim() as sim:
        yield sim


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_notebook_runs_with_drive_mounted_and_the_users_secrets(
    drive: DriveSim, tmp_path: Path
) -> None:
    upload(drive, "data.txt", b"from drive", "text/plain")
    cell = (
        "import os\n"
        "from google.colab import drive, userdata\n"
        "root = os.environ['COLAB_SIM_ROOT']\n"
        "drive.mount(root + '/drive')\n"
        "mine = root + '/drive/MyDrive'\n"
        "text = open(mine + '/data.txt').read()\n"
        "open(mine + '/answer.txt', 'w').write(text + ' / ' + userdata.get('TOKEN'))\n"
        "drive.flush_and_unmount()\n"
    )
    nb = upload(drive, "t.ipynb", notebook(cell), NOTEBOOK_MIME)
    with ColabSim(
        drive_url=drive.url, data_dir=tmp_path, sync_seconds=0.2, secrets={"TOKEN": "tok"}
    ) as colab:
        with urllib.request.urlopen(f"{colab.url}/drive/{nb}", timeout=30) as r:
            assert r.status == 200  # the user's click
        [sid] = colab.sessions
        info = colab.wait(sid, 60)
    assert (info.state, info.reason) == ("finished", ""), info
    [answer] = [f for f in drive.files() if f.title == "answer.txt"]
    assert drive.content(answer.id) == b"from drive / tok"


def test_sessions_end_as_a_colab_vm_does_and_take_their_processes_along(
    drive: DriveSim, tmp_path: Path
) -> None:
    """Idle past idle_seconds unless touched; at session_seconds whatever happens; a
    disconnect at once. A process the notebook started dies with it."""
    cell = (
        "import os, subprocess, time\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "open(os.environ['COLAB_SIM_ROOT'] + '/child.pid', 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    nb = upload(drive, "sleep.ipynb", notebook(cell), NOTEBOOK_MIME)
    with ColabSim(
        drive_url=drive.url, data_dir=tmp_path, idle_seconds=3, session_seconds=8
    ) as colab:
        idle = colab.open(nb)
        touched = colab.open(nb)
        cut = colab.open(nb)
        pid_file = Path(cut.folder) / "content" / "child.pid"
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        colab.disconnect(cut.id)
        assert cut.state == "disconnected" and cut.reason == "disconnected"
        time.sleep(0.5)
        assert not alive(child), "a process of a disconnected session lives on"
        end = time.monotonic() + 20
        while time.monotonic() < end and touched.state == "running":
            colab.touch(touched.id)  # the user keeps the tab busy: only the cap ends it
            time.sleep(0.5)
        assert (idle.state, idle.reason) == ("disconnected", "idle")
        assert (touched.state, touched.reason) == ("disconnected", "session cap")
        assert touched.ended_at is not None and idle.ended_at is not None
        assert touched.ended_at - touched.opened_at >= 8 > idle.ended_at - idle.opened_at


def test_a_trashed_notebook_does_not_open(drive: DriveSim, tmp_path: Path) -> None:
    nb = upload(drive, "gone.ipynb", notebook("print(1)"), NOTEBOOK_MIME)
    req = urllib.request.Request(
        f"{drive.url}/drive/v2/files/{nb}/trash", data=b"", method="POST",
        headers={"Authorization": f"Bearer {drive.access_token()}"},
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=30).read()
    with ColabSim(drive_url=drive.url, data_dir=tmp_path) as colab:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{colab.url}/drive/{nb}", timeout=30)
        assert e.value.code == 404 and colab.sessions == {}
