"""The commands that show runs, on a run in every status, piped and on a terminal.

`launch status` on an unfinished run once died with rich's MarkupError (an empty `[]` style for
statuses without a colour): nothing tested a run that was not finished. Each run here is walked
through the store's real transitions to its status; the real CLI then shows it as a user sees
it, through a pipe and through a pseudo-terminal (rich draws colours and tables only there).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.state import RunStatus
from launcher.store import RunStore
from tests.conftest import launch_cmd
from tests.terminal import in_terminal

_PATH = [
    RunStatus.PREPARING,
    RunStatus.PROVISIONING,
    RunStatus.UPLOADING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.PULLING,
]
# each status, and the way to it from PENDING
_WAY: dict[RunStatus, list[RunStatus]] = {RunStatus.PENDING: []}
for _i, _status in enumerate(_PATH):
    _WAY[_status] = _PATH[: _i + 1]
_WAY[RunStatus.SUCCEEDED] = [*_PATH, RunStatus.SUCCEEDED]
for _end in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PREEMPTED):
    _WAY[_end] = [*_PATH[:5], _end]


def _walk(store: RunStore, home: Path, status: RunStatus) -> str:
    run_id = f"job-{status.value}"
    store.create_run(
        run_id=run_id,
        job="job",
        target="local",
        spec_digest="0" * 64,
        spec_path=str(home / "job.yaml"),
        spec={"name": "job"},
        output_dir=str(home / "runs" / run_id),
    )
    current = RunStatus.PENDING
    for new in _WAY[status]:
        # a message with markup in it must be printed as it is, never read as markup
        store.transition(run_id, expected=current, new=new, message=f"now [/] {new.value} [b]")
        current = new
    return run_id


@pytest.fixture
def runs(launch_home: Path) -> dict[RunStatus, str]:
    store = RunStore(launch_home)
    try:
        return {status: _walk(store, launch_home, status) for status in _WAY}
    finally:
        store.close()


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_status_ls_and_report_show_a_run_in_every_status(
    runs: dict[RunStatus, str], terminal: bool
) -> None:
    assert set(runs) == set(RunStatus)  # every status is covered
    commands = [["ls"], ["report"], *(["status", run] for run in runs.values())]
    for command in commands:
        args = [*launch_cmd(), *command]
        if terminal:
            code, text = in_terminal(args)
        else:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
            code, text = proc.returncode, proc.stdout + proc.stderr
        assert code == 0, (command, text)
        assert "internal error" not in text and "Traceback" not in text, (command, text)
        if command[0] == "status":
            status = next(s for s, r in runs.items() if r == command[1])
            assert status.value in text, text
            if status is not RunStatus.PENDING:
                assert f"now [/] {status.value} [b]" in text, text
