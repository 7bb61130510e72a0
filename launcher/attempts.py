"""What carries a run from one attempt to the next, for every target.

An attempt ends early when the platform takes the machine (a Vast instance outbid, a Kaggle
session at its cap, a container or agent that died). The orchestrator then pulls what it can,
frees the attempt, and starts the next one from the newest pulled checkpoint. Nothing may be lost
on the way, and nothing counted twice:

- logs/job.log: every line was streamed once, live. A pull that could not reach the machine any
  more may lack the last lines: `keep_attempt_log` completes the pulled copy with the streamed
  lines after its last one, then keeps it as logs/job.attempt-<n>.log. The next attempt writes a
  new job.log; `attempt_logs` lists them all in order.
- outputs/metrics.jsonl: the agent copies it to logs/checkpoint-metrics/<checkpoint>.jsonl each
  time a new checkpoint appears. `restore_metrics` puts back the copy that belongs to the newest
  pulled checkpoint, so the resumed job continues exactly after the lines that checkpoint had
  seen: none missing, none written twice. Newer checkpoints pulled without their copy are left
  out of the resume (`resume_sources` skips them).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections import deque
from pathlib import Path

from launcher import agent as agent_mod
from launcher.sync import atomic_write_bytes, tree_files
from launcher.targets.base import LogLine

ATTEMPT_LOG = "job.attempt-{n}.log"  # under logs/: the log of an attempt a later one replaced
KEEP_LINES = 200_000  # streamed lines kept per attempt; older ones were pulled long since


class StreamedLog:
    """The newest log lines of the current attempt, as they were streamed."""

    def __init__(self, keep: int = KEEP_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=keep)

    def add(self, line: LogLine) -> None:
        self.lines.append(f"{line.at} {line.stream} {line.text}")

    def after(self, last: str | None) -> list[str]:
        """The lines after `last` (a whole job.log line without its newline); all of them when
        `last` is None; none when `last` is not among them (there is a gap we cannot fill)."""
        if last is None:
            return list(self.lines)
        kept = list(self.lines)
        for i in range(len(kept) - 1, -1, -1):
            if kept[i] == last:
                return kept[i + 1 :]
        return []


def keep_attempt_log(
    dest: Path, attempt: int, streamed: StreamedLog | None, *, apart: bool = True
) -> Path | None:
    """Complete the pulled logs/job.log with what was streamed after its last line; with
    `apart` (another attempt follows) keep it as logs/job.attempt-<attempt>.log, so the next
    attempt's job.log starts afresh. The file written, or None when the attempt logged nothing."""
    log = dest / agent_mod.LOG_FILE
    kept = log.with_name(ATTEMPT_LOG.format(n=attempt)) if apart else log
    have = log.read_bytes() if log.is_file() else b""
    if have and not have.endswith(b"\n"):  # a torn last line: the streamed copy is whole
        have = have[: have.rfind(b"\n") + 1]
    more = streamed.after(_last_line_of(have)) if streamed is not None else []
    data = have + "".join(f"{m}\n" for m in more).encode("utf-8", "replace")
    if not data:
        return None
    if kept != log or more:
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(kept, data)
    if kept != log:
        log.unlink(missing_ok=True)
    return kept


def _last_line_of(data: bytes) -> str | None:
    lines = [ln for ln in data.split(b"\n") if ln]
    return lines[-1].decode("utf-8", "replace") if lines else None


def attempt_logs(run_dir: Path) -> list[Path]:
    """Every log of a run folder in order: each earlier attempt's, then logs/job.log."""
    logs = run_dir / agent_mod.LOGS
    earlier: list[tuple[int, Path]] = []
    for path in logs.glob("job.attempt-*.log") if logs.is_dir() else ():
        number = path.name[len("job.attempt-") : -len(".log")]
        if number.isdigit():
            earlier.append((int(number), path))
    current = run_dir / agent_mod.LOG_FILE
    return [p for _n, p in sorted(earlier)] + ([current] if current.is_file() else [])


def _checkpoints_in_order(folder: Path) -> list[str]:
    """Complete checkpoints of a checkpoints folder, oldest first, as the agent orders them
    (mtime, then name). A checkpoint is a direct child holding a finished file: a file, or a
    folder with one in it. A folder with none (empty, or its files still being written) ships
    nothing to the next attempt, so it is nothing to resume from. Neither are the agent's own
    status.json and logs/: a run folder read as a bare checkpoints folder put them here."""
    found: dict[str, list[str]] = {}
    for rel in tree_files(folder):  # finished regular files only
        top, _, inner = rel.partition("/")
        found.setdefault(top, []).append(inner)
    names: list[tuple[int, str]] = []
    for name, inner in found.items():
        if name == agent_mod.STATUS_FILE or (name == agent_mod.LOGS and _agent_logs(inner)):
            continue
        names.append(((folder / name).stat().st_mtime_ns, name))
    return [name for _mtime, name in sorted(names)]


_SNAPSHOTS_IN_LOGS = agent_mod.METRICS_SNAPSHOTS.removeprefix(f"{agent_mod.LOGS}/") + "/"


def _agent_logs(paths: list[str]) -> bool:
    """Are these (relative to a logs/ folder) all files the agent and the launcher write there:
    job.log, job.attempt-<n>.log, checkpoint-metrics/<checkpoint>.jsonl?"""
    job_log = agent_mod.LOG_FILE.removeprefix(f"{agent_mod.LOGS}/")
    return all(
        p == job_log
        or (p.startswith("job.attempt-") and p[len("job.attempt-") : -len(".log")].isdigit())
        or (p.startswith(_SNAPSHOTS_IN_LOGS) and p.endswith(".jsonl"))
        for p in paths
    )


def restore_metrics(dest: Path) -> tuple[str | None, list[str]]:
    """Put back metrics.jsonl as it was at the newest pulled checkpoint that has a snapshot.

    Returns that checkpoint's name (None when no snapshot was pulled: the job writes no metrics,
    and the pulled copy stays as it is) and the newer checkpoints to leave out of the resume:
    pulled without their snapshot (a pull cut short), resuming from them would lose the metrics
    lines in between. They stay here; the resumed job writes them again.
    """
    order = _checkpoints_in_order(dest / agent_mod.CHECKPOINTS)
    snaps = dest / agent_mod.METRICS_SNAPSHOTS
    have = [n for n in order if (snaps / f"{n}.jsonl").is_file()]
    if not have:
        return None, []
    best = have[-1]
    target = dest / agent_mod.OUTPUTS / agent_mod.METRICS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore.tmp")
    shutil.copyfile(snaps / f"{best}.jsonl", tmp)
    tmp.replace(target)
    return best, order[order.index(best) + 1 :]


def has_checkpoint(folder: Path, skip: list[str] | None = None) -> bool:
    """Does a run folder (or a bare checkpoints folder) hold a checkpoint to resume from?"""
    base = folder / agent_mod.CHECKPOINTS if is_run_folder(folder) else folder
    return any(n not in (skip or []) for n in _checkpoints_in_order(base))


def resume_checkpoint(run_dir: Path, skip: list[str] | None = None) -> str | None:
    """The checkpoint of a pulled run folder that its next attempt resumes from (the newest
    not in `skip`), or None: that attempt starts afresh.

    Only the folder's checkpoints/ is looked at. Asked of the whole folder, `has_checkpoint`
    guesses, and a run folder with neither checkpoints/ nor outputs/ (an attempt taken before its
    first checkpoint, whose job writes its outputs at the end) reads as a bare checkpoints folder
    whose logs/ is a checkpoint (issue 20, item 11)."""
    names = [
        n for n in _checkpoints_in_order(run_dir / agent_mod.CHECKPOINTS) if n not in (skip or [])
    ]
    return names[-1] if names else None


def is_run_folder(folder: Path) -> bool:
    return (folder / agent_mod.CHECKPOINTS).is_dir() or (folder / agent_mod.OUTPUTS).is_dir()


def resume_sources(base: Path, skip: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """What a resumed attempt starts from, as {workspace folder: {relative path: local file}}:
    a run folder's checkpoints/ and outputs/ (metrics continue), or a bare checkpoints folder
    (`launch run --resume-from`: a new run, whose metrics start afresh). Only complete
    checkpoints outside `skip` travel (the agent resumes from whatever it finds in its
    checkpoints/); a folder with nothing to carry is left out."""
    if not is_run_folder(base):
        parts = {agent_mod.CHECKPOINTS: base}
    else:
        parts = {
            sub: base / sub
            for sub in (agent_mod.CHECKPOINTS, agent_mod.OUTPUTS)
            if (base / sub).is_dir()
        }
    out: dict[str, dict[str, Path]] = {}
    for sub, folder in parts.items():
        files = tree_files(folder)
        if sub == agent_mod.CHECKPOINTS:
            keep = set(_checkpoints_in_order(folder)) - set(skip or [])
            files = {p: f for p, f in files.items() if p.split("/")[0] in keep}
        if files:
            out[sub] = files
    return out


def copy_resume_sources(base: Path, dest: Path, skip: list[str] | None = None) -> None:
    """Copy `resume_sources(base)` into a local workspace `dest` (the local target)."""
    for sub, files in resume_sources(base, skip).items():
        for rel, src in files.items():
            target = dest / sub / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


__all__ = [
    "StreamedLog",
    "attempt_logs",
    "copy_resume_sources",
    "has_checkpoint",
    "keep_attempt_log",
    "restore_metrics",
    "resume_checkpoint",
    "resume_sources",
    "state_archive",
]


def state_archive(base: Path, skip: list[str], dest: Path) -> str:
    """Pack what a resumed session starts from (`resume_sources`: checkpoints/ and outputs/ of
    a pulled run folder, or a bare checkpoints folder) into one archive, for a platform that
    gets it as a file (a Kaggle state dataset, a Colab state file); its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for sub, files in resume_sources(base, skip).items():
            for rel, path in sorted(files.items()):
                tar.add(path, arcname=f"{sub}/{rel}")
    tmp.replace(dest)
    h = hashlib.sha256()
    with dest.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
