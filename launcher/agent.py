"""The in-job supervisor shipped in every bundle: `python agent.py --root ROOT [--config PATH]`.

The same file runs in docker, on Vast, in a Kaggle kernel and in Colab, hence stdlib only and
Python 3.8. It runs the workload, tees its output to logs/job.log, keeps status.json current and
turns a signal, the control file or the time limit into a graceful stop (SIGTERM, grace, SIGKILL).
Importing it has no side effects: the launcher reuses its constants and parsers.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, TextIO, cast

AGENT_VERSION = "1.0"
STATUS_FILE = "status.json"
CONTROL_FILE = "control.json"
LOG_FILE = "logs/job.log"
OUTPUTS = "outputs"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
BUNDLE = "bundle"
METRICS_FILE = "metrics.jsonl"  # under OUTPUTS
# metrics.jsonl as it was when each checkpoint appeared: <checkpoint name>.jsonl. A run resumed
# from that checkpoint elsewhere continues from these lines (launcher/targets/vast/moves.py).
METRICS_SNAPSHOTS = "logs/checkpoint-metrics"
KEEP_SNAPSHOTS = 5
STREAMS = ("out", "err", "agent")

# credentials the fetch alone needs ({"NAME": "value"}, 0600), read and deleted by the agent
# before the workload starts: never in any process's environment
FETCH_ENV_FILE = ".fetch-env.json"
EXIT_NO_INPUT = 66  # sysexits' EX_NOINPUT: an input could not be fetched; the job never started
_PARTIAL_SUFFIXES = (".tmp", ".partial", ".part", "~")
_METRICS_TAIL = 1 << 20  # only the tail is read: metrics.jsonl grows for the whole run
_MAX_LINE = 1 << 16  # longer lines are split, so a newline-free stream cannot exhaust memory
# Without a trap, SIGTERM kills `sh -c` at once, while the command it runs is still saving its
# checkpoint. With one, the shell waits for that command and exits with its status (POSIX).
_SHELL_PRELUDE = "trap 'exit $?' TERM\n"


def process_start(pid: int) -> str | None:
    """When `pid` started (/proc starttime; None where there is no /proc): whoever later
    signals the workload's group by its pid checks it is still this process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def utc_now() -> str:
    """UTC ISO 8601 with milliseconds and a Z, e.g. 2024-05-01T12:00:00.123Z."""
    now = time.time()
    ms = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"


def newest_checkpoint(directory: str | os.PathLike[str]) -> str | None:
    """Absolute path of the newest complete checkpoint among the direct children of `directory`.

    Hidden names and in-progress names (.tmp, .partial, .part, ~) are ignored. The greatest
    mtime wins; ties go to the greatest name so that every reader picks the same one.
    """
    base = os.path.abspath(directory)
    try:
        names = os.listdir(base)
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for name in names:
        if name.startswith(".") or name.endswith(_PARTIAL_SUFFIXES):
            continue
        try:
            key = (os.stat(os.path.join(base, name)).st_mtime_ns, name)
        except OSError:  # removed while we looked, or a dangling link
            continue
        if best is None or key > best:
            best = key
    return None if best is None else os.path.join(base, best[1])


def parse_log_line(line: str) -> tuple[str, str, str] | None:
    """(timestamp, stream, text) of one job.log line, or None when it is not one."""
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) < 2 or parts[1] not in STREAMS:
        return None
    at = parts[0]
    if len(at) != 24 or at[10] != "T" or not at.endswith("Z"):
        return None
    return at, parts[1], parts[2] if len(parts) == 3 else ""


def read_last_metrics(path: str) -> dict[str, Any] | None:
    """The last line of a metrics.jsonl that parses as a JSON object; a half-written last line
    is skipped (a prefix of an object line never parses as an object)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - _METRICS_TAIL)
            f.seek(start)
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for raw in reversed(lines[1:] if start else lines):  # a tail's first line is cut
        try:
            obj = json.loads(raw.decode("utf-8"))
        except ValueError:  # blank, half-written or not JSON
            continue
        if isinstance(obj, dict):
            return cast("dict[str, Any]", obj)
    return None


def new_status(**values: Any) -> dict[str, Any]:
    """Every key status.json has. stop_reason: null | "signal" | "control" | "time_limit";
    error: why the agent itself could not run the workload (bad config, spawn failure)."""
    status: dict[str, Any] = {"run_id": None, "attempt": None, "agent_version": AGENT_VERSION}
    status["phase"] = "starting"  # then "running", "stopping", "exited"
    status.update(dict.fromkeys(("pid", "started_at", "heartbeat_at", "ended_at", "exit_code")))
    status["pid_start"] = None  # the workload's /proc starttime: a reused pid is not it
    status.update(stop_reason=None, last_checkpoint=None, last_metrics=None, error=None)
    return dict(status, **values)


def atomic_write_json(path: str, data: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never a torn one."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ConfigError(ValueError):
    pass


class Config:
    """agent.json, validated. Unknown keys are ignored so older agents accept newer configs;
    a null optional key takes its default."""

    def __init__(self, data: object, root: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object")
        d = cast("dict[str, object]", data)  # JSON keys are strings
        if d.get("run_id") is None:
            raise ConfigError("'run_id' is required")
        self.run_id = _string(d, "run_id", "")
        self.command = _command(d.get("command"))
        self.workdir = os.path.join(root, BUNDLE, _string(d, "workdir", "workload"))
        self.env = _string_map(d.get("env"))
        # the image's own ENV, where the job is not started by `docker run` (an SSH session,
        # srun): under the job's env, as docker puts `-e` over the image's ENV
        self.image_env = _string_map(d.get("image_env"))
        # an absolute input_dir (/kaggle/input) stays as it is
        self.input_dir = os.path.join(root, _string(d, "input_dir", "inputs"))
        limited = d.get("time_limit_s") is not None
        self.time_limit_s = _number(d, "time_limit_s", 0, 0, strict=True) if limited else None
        self.stop_margin_s = _number(d, "stop_margin_s", 60, 0)
        self.grace_s = _number(d, "grace_s", 30, 0)
        self.heartbeat_s = _number(d, "heartbeat_s", 5, 0, strict=True)
        self.control_poll_s = _number(d, "control_poll_s", 1, 0, strict=True)
        attempt = d.get("attempt")
        attempt = 1 if attempt is None else attempt
        # bool is an int subclass, and `true` is no attempt number
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ConfigError("'attempt' must be an integer >= 1")
        self.attempt = attempt
        # inputs the machine downloads itself before the workload starts (launch_fetch items)
        self.fetch = _object_list(d.get("fetch"), "fetch")
        default_cache = os.environ.get("LAUNCH_INPUT_CACHE") or os.path.join(
            "~", ".cache", "launch", "inputs"
        )
        self.input_cache = os.path.expanduser(_string(d, "input_cache", default_cache))
        # credentials only the fetch needs: the workload's environment does not get them
        self.fetch_only_env = _string_list(d.get("fetch_only_env"), "fetch_only_env")
        # where they wait for the agent (a 0600 JSON file it reads and deletes)
        self.fetch_env_file = os.path.join(root, _string(d, "fetch_env_file", FETCH_ENV_FILE))


def _object_list(value: object, key: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, dict) for v in cast("list[object]", value)):
        return [cast("dict[str, Any]", v) for v in cast("list[object]", value)]
    raise ConfigError(f"{key!r} must be a list of objects")


def _string_list(value: object, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in cast("list[object]", value)):
        return [str(v) for v in cast("list[object]", value)]
    raise ConfigError(f"{key!r} must be a list of strings")


def _string(d: dict[str, object], key: str, default: str) -> str:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key!r} must be a non-empty string")
    return value


def _number(
    d: dict[str, object], key: str, default: float, low: float, strict: bool = False
) -> float:
    value = d.get(key)
    if value is None:
        return float(default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value > low or (value == low and not strict):
            return float(value)
    raise ConfigError(f"{key!r} must be a number {'>' if strict else '>='} {low:g}")


def _command(value: object) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value:
        items = cast("list[object]", value)
        if all(isinstance(c, str) for c in items):
            return [str(c) for c in items]
    raise ConfigError("'command' is required: a non-empty string or list of strings")


def _string_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        items = cast("dict[object, object]", value)
        if all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()):
            return {str(k): str(v) for k, v in items.items()}
    raise ConfigError("'env' must be an object mapping strings to strings")


class JobLog:
    """logs/job.log: one timestamped line per output line, whole lines only, written live."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the agent
        self._lock = threading.Lock()
        self._echo = True

    def write(self, stream: str, text: str, raw: str | None = None) -> None:
        with self._lock:
            if self._file.closed:  # a straggler's pump, after the agent finished
                return
            self._file.write(f"{utc_now()} {stream} {text}\n".encode("utf-8", "replace"))
            self._file.flush()
            echo = sys.stderr if stream != "out" else sys.stdout
            self._echo_line(echo, raw if raw is not None else f"[agent] {text}\n")

    def _echo_line(self, target: TextIO, text: str) -> None:
        if not self._echo:
            return
        try:  # bytes, so a non-UTF-8 console encoding cannot break the tee
            target.buffer.write(text.encode("utf-8", "replace"))
            target.flush()
        except (OSError, ValueError, AttributeError):
            self._echo = False  # a closed console must not stop the log

    def pump(self, pipe: IO[bytes], stream: str) -> None:
        # newline="": \r also ends a line (progress bars show live) and the raw text is kept
        reader = io.TextIOWrapper(pipe, encoding="utf-8", errors="replace", newline="")
        with reader:
            while True:
                line = reader.readline(_MAX_LINE)
                if not line:
                    return
                # a line holds at most one terminator: \r, \n or \r\n
                self.write(stream, line.rstrip("\r\n"), line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Agent:
    def __init__(self, root: str, config: Config) -> None:
        self.root = root
        self.cfg = config
        self.log = JobLog(os.path.join(root, LOG_FILE))
        self.outputs = os.path.join(root, OUTPUTS)
        self.checkpoints = os.path.join(root, CHECKPOINTS)
        self.status = new_status(run_id=config.run_id, attempt=config.attempt)
        self._signal: int | None = None  # set by the handler, acted on by the main loop
        self._proc: subprocess.Popen[bytes] | None = None
        self._kill_at: float | None = None  # set by a stop; cleared once SIGKILL is sent
        self._snapped = newest_checkpoint(self.checkpoints)  # the resumed one needs no copy

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signal = signum

    def write_status(self, **changes: Any) -> None:
        self.status.update(changes)
        ckpt = newest_checkpoint(self.checkpoints)
        self.status["last_checkpoint"] = os.path.basename(ckpt) if ckpt else None
        self.status["last_metrics"] = read_last_metrics(os.path.join(self.outputs, METRICS_FILE))
        self.status["heartbeat_at"] = utc_now()
        try:
            atomic_write_json(os.path.join(self.root, STATUS_FILE), self.status)
        except OSError as e:  # a full disk must not take the workload down with the agent
            self.log.write("agent", f"could not write {STATUS_FILE}: {e}")

    def snapshot_metrics(self) -> None:
        """Copy metrics.jsonl (whole lines) when a new checkpoint appears; keep the newest few."""
        ckpt = newest_checkpoint(self.checkpoints)
        if ckpt is None or ckpt == self._snapped:
            return
        self._snapped = ckpt
        folder = os.path.join(self.root, METRICS_SNAPSHOTS)
        try:  # no metrics yet, or a full disk: then the pulled copy is all there is
            with open(os.path.join(self.outputs, METRICS_FILE), "rb") as f:
                data = f.read()
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, os.path.basename(ckpt) + ".jsonl")
            with open(path + ".tmp", "wb") as f:
                f.write(data[: data.rfind(b"\n") + 1])
            os.replace(path + ".tmp", path)
            kept = sorted(
                (os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getmtime
            )
            for old in kept[:-KEEP_SNAPSHOTS]:
                os.remove(old)
        except OSError:
            pass

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.cfg.image_env)
        for name in self.cfg.fetch_only_env:
            env.pop(name, None)
        env.update(self.cfg.env)
        # launchkit.py ships beside this file: `import launchkit` works in every job
        here = os.path.dirname(os.path.abspath(__file__))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env.update(
            LAUNCH_RUN_ID=self.cfg.run_id,
            LAUNCH_OUTPUT_DIR=self.outputs,
            LAUNCH_CHECKPOINT_DIR=self.checkpoints,
            LAUNCH_INPUT_DIR=self.cfg.input_dir,
            LAUNCH_ATTEMPT=str(self.cfg.attempt),
            PYTHONUNBUFFERED="1",
        )
        env.pop("LAUNCH_RESUME_FROM", None)  # only ever the checkpoint found here
        resume = newest_checkpoint(self.checkpoints)
        if resume:
            env["LAUNCH_RESUME_FROM"] = resume
            self.log.write("agent", f"resuming from {resume}")
        return env

    def _request_stop(self, reason: str, detail: str, hard_deadline: float | None) -> None:
        if self.status["stop_reason"] is not None:
            return  # idempotent: a second request must not restart the grace period
        self.log.write("agent", f"stop requested ({reason}: {detail})")
        now = time.monotonic()
        # past the hard limit the platform kills us anyway; better we do it and say so
        self._kill_at = now + self.cfg.grace_s
        if hard_deadline is not None:
            self._kill_at = max(now, min(self._kill_at, hard_deadline))
        self.write_status(phase="stopping", stop_reason=reason)
        self._signal_group(signal.SIGTERM)
        self.log.write("agent", f"sent SIGTERM; SIGKILL in {self._kill_at - now:.1f}s")

    def _signal_group(self, sig: int) -> bool:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _control_says_stop(self) -> bool:
        try:
            with open(os.path.join(self.root, CONTROL_FILE), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):  # absent, or caught mid-write by a non-atomic writer
            return False
        return isinstance(data, dict) and cast("dict[str, object]", data).get("desired") == "stop"

    def run(self) -> int:
        t0 = time.monotonic()
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        os.makedirs(self.outputs, exist_ok=True)
        os.makedirs(self.checkpoints, exist_ok=True)
        self.log.write("agent", f"agent {AGENT_VERSION}: run {cfg.run_id} attempt {cfg.attempt}")
        self.write_status()
        fetch_env = self._take_fetch_env()
        if cfg.fetch:
            stopped = self._fetch_inputs(fetch_env)
            if stopped is not None:
                return stopped
        fetch_env.clear()
        cmd = cfg.command
        argv = ["/bin/sh", "-c", _SHELL_PRELUDE + cmd] if isinstance(cmd, str) else cmd
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=cfg.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a stop reaches the workload's children too
            )
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126  # as a shell would
            self.log.write("agent", f"could not start the workload: {e}; exit code {code}")
            return self._finish(code, error=f"could not start the workload: {e}")
        proc = self._proc
        pumps = [
            threading.Thread(target=self.log.pump, args=(pipe, name), daemon=True)
            for pipe, name in ((proc.stdout, "out"), (proc.stderr, "err"))
        ]
        for t in pumps:
            t.start()
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        self.log.write("agent", f"started pid {proc.pid}: {shown}")
        self.write_status(
            phase="running", pid=proc.pid, pid_start=process_start(proc.pid), started_at=utc_now()
        )
        try:
            returncode = self._supervise(t0)
            if self._kill_at is not None:
                # mid-stop, the rest of the group may still be saving: it gets the grace left
                for t in pumps:
                    t.join(max(0.0, self._kill_at - time.monotonic()))
        finally:
            # the group ends with its leader; also reached when the agent itself fails
            if self._signal_group(signal.SIGKILL) and proc.returncode is not None:
                self.log.write("agent", "killed processes the workload left behind")
        for t in pumps:
            t.join(timeout=5)
        code = 128 - returncode if returncode < 0 else returncode
        how = f"killed by signal {-returncode}" if returncode < 0 else "exited"
        self.log.write("agent", f"workload {how}; exit code {code}")
        return self._finish(code)

    def _take_fetch_env(self) -> dict[str, str]:
        path = self.cfg.fetch_env_file
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        finally:
            try:
                os.remove(path)
            except OSError:
                pass
        if not isinstance(data, dict):
            return {}
        items = cast("dict[object, object]", data).items()
        return {str(k): str(v) for k, v in items if isinstance(v, str)}

    def _fetch_inputs(self, fetch_env: dict[str, str]) -> int | None:
        """Download the inputs this machine fetches itself; an exit code when the job must not
        start (a fetch failed, or a stop came first), None to go on. The download runs in a
        thread so that a cancel or a signal is obeyed at once and the heartbeat goes on."""
        cfg = self.cfg
        here = os.path.dirname(os.path.abspath(__file__))
        if here not in sys.path:
            sys.path.insert(0, here)
        try:  # beside this file in a bundle; launcher.launch_fetch when imported by the launcher
            fetcher = importlib.import_module("launch_fetch")
        except ImportError:
            fetcher = importlib.import_module("launcher.launch_fetch")
        outcome: list[BaseException | None] = []

        def note(message: str) -> None:
            self.log.write("agent", message)

        def work() -> None:
            try:
                env = dict(os.environ, **fetch_env)
                fetcher.fetch_all(cfg.fetch, cfg.input_dir, cfg.input_cache, note, env)
                outcome.append(None)
            except Exception as e:  # noqa: BLE001 - reported as the attempt's error below
                outcome.append(e)

        self.log.write("agent", f"fetching {len(cfg.fetch)} input(s) into {cfg.input_dir}")
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        next_beat = time.monotonic() + cfg.heartbeat_s
        while worker.is_alive():
            worker.join(0.1)
            reason = None
            if self._signal is not None:
                reason = f"received {signal.Signals(self._signal).name}"
            elif self._control_says_stop():
                reason = f"{CONTROL_FILE} asks to stop"
            if reason is not None:
                stop = "signal" if self._signal is not None else "control"
                self.log.write("agent", f"stop requested ({stop}: {reason}) before the job began")
                self.status["stop_reason"] = stop
                return self._finish(0)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + cfg.heartbeat_s
                self.write_status()
        error = outcome[0] if outcome else RuntimeError("the fetch ended without a word")
        if error is None:
            return None
        message = (
            str(error) if isinstance(error, fetcher.FetchError) else f"fetching inputs: {error}"
        )
        self.log.write("agent", f"{message}; the job was not started")
        return self._finish(EXIT_NO_INPUT, error=message)

    def _supervise(self, t0: float) -> int:
        assert self._proc is not None
        cfg = self.cfg
        stop_at = hard = None
        if cfg.time_limit_s is not None:
            hard = t0 + cfg.time_limit_s
            margin = cfg.time_limit_s - cfg.stop_margin_s
            stop_at = t0 + (margin if margin > 0 else cfg.time_limit_s * 0.9)
        tick = min(0.1, cfg.heartbeat_s, cfg.control_poll_s)
        next_beat = time.monotonic() + cfg.heartbeat_s
        next_poll = time.monotonic()
        while True:
            try:
                return self._proc.wait(timeout=tick)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            self.snapshot_metrics()
            if self._signal is not None:
                name = signal.Signals(self._signal).name
                self._request_stop("signal", f"received {name}", hard)
                self._signal = None
            if now >= next_poll:
                next_poll = now + cfg.control_poll_s
                if self._control_says_stop():
                    self._request_stop("control", f"{CONTROL_FILE} asks to stop", hard)
            if stop_at is not None and now >= stop_at:
                detail = f"{now - t0:.1f}s of {cfg.time_limit_s:g}s used"
                self._request_stop("time_limit", detail, hard)
            if self._kill_at is not None and now >= self._kill_at:
                self._kill_at = None
                self._signal_group(signal.SIGKILL)
                self.log.write("agent", "grace period over; sent SIGKILL")
            if now >= next_beat:
                next_beat = now + cfg.heartbeat_s
                self.write_status()

    def _finish(self, code: int, error: str | None = None) -> int:
        self.write_status(phase="exited", exit_code=code, ended_at=utc_now(), error=error)
        self.log.close()
        return code


def _bad_config(root: str, path: str, problem: str) -> int:
    message = f"bad config {path}: {problem}"
    print(f"agent: {message}", file=sys.stderr)
    try:  # so the launcher can show why, through the same channels as any run
        JobLog(os.path.join(root, LOG_FILE)).write("agent", message, raw="")
        status = new_status(phase="exited", ended_at=utc_now(), exit_code=2, error=message)
        atomic_write_json(os.path.join(root, STATUS_FILE), status)
    except OSError:
        pass
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a launch job and supervise it.")
    parser.add_argument("--root", required=True, help="the job's workspace")
    parser.add_argument("--config", help="agent.json (default: ROOT/bundle/agent.json)")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    path = args.config or os.path.join(root, BUNDLE, "agent.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = Config(json.load(f), root)
    except OSError as e:
        return _bad_config(root, path, f"cannot read it ({e.strerror})")
    except ValueError as e:  # json.JSONDecodeError and ConfigError
        return _bad_config(root, path, str(e))
    if not os.path.isdir(config.workdir):
        return _bad_config(root, path, f"workdir {config.workdir} is not a directory")
    return Agent(root, config).run()


if __name__ == "__main__":
    sys.exit(main())
