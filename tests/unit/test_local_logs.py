"""The log cursor contract of read_logs, on a real job.log written the agent's way."""

from __future__ import annotations

from pathlib import Path

from launcher import agent
from launcher.targets.local.target import LocalHandle, LocalTarget


def _handle(root: Path) -> LocalHandle:
    return LocalHandle(run_id="r", runtime="process", root=str(root), pid=1)


def test_read_logs_never_loses_doubles_or_splits_a_line(tmp_path: Path) -> None:
    target = LocalTarget(home=tmp_path)
    handle = _handle(tmp_path)
    log = tmp_path / agent.LOG_FILE
    log.parent.mkdir()
    texts = [f"line {i} \x0c form feed \u2028 separator" for i in range(50)]
    seen: list[str] = []
    cursor = 0
    with open(log, "ab") as f:
        for i, text in enumerate(texts):
            raw = f"2026-11-24T13:00:00.{i:03d}Z out {text}\n".encode()
            # write each line in two pieces, reading in between: a half line is not a line
            f.write(raw[:20])
            f.flush()
            lines, cursor = target.read_logs(handle, cursor)
            seen += [ln.text for ln in lines]
            f.write(raw[20:])
            f.flush()
            if i % 3 == 0:
                lines, cursor = target.read_logs(handle, cursor)
                seen += [ln.text for ln in lines]
    lines, cursor = target.read_logs(handle, cursor)
    seen += [ln.text for ln in lines]
    assert seen == texts
    assert target.read_logs(handle, cursor) == ([], cursor)


def test_read_logs_before_the_job_wrote_anything(tmp_path: Path) -> None:
    assert LocalTarget(home=tmp_path).read_logs(_handle(tmp_path), 0) == ([], 0)
