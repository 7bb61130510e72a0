"""The local target: this machine, with the job's image on docker or as a plain process.

Both runtimes share one workspace layout under $LAUNCH_HOME/work/<run_id> (the same layout the
agent uses on every platform); they differ only in how the agent is started and watched. Status,
logs and pulls read the workspace, so they work the same after the launcher died and came back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel

from launcher import agent as agent_mod
from launcher.bundle import extract_bundle
from launcher.errors import SubmitError, TargetUnavailableError
from launcher.state import RunHandle
from launcher.sync import LocalTree, PullResult, atomic_write_text, pull_tree
from launcher.targets.base import (
    CheckResult,
    Ledger,
    LogLine,
    Phase,
    Plan,
    Prepared,
    Target,
    TargetStatus,
)
from launcher.targets.jobfiles import (
    agent_config,
    agent_phase,
    job_bundle,
    local_inputs,
    parse_log_chunk,
)
from launcher.targets.local import process

CONTAINER_ROOT = "/launch"
PULLED_DIRS = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


class LocalHandle(BaseModel):
    runtime: Literal["docker", "process"]
    root: str
    container: str | None = None
    pid: int | None = None
    pid_ticks: str = ""


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED_DIRS or path == agent_mod.STATUS_FILE


class LocalTarget(Target):
    name: ClassVar[str] = "local"

    def __init__(self, home: Path, notify: Callable[[str], None] = lambda _m: None) -> None:
        self.home = home
        self.notify = notify
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._docker_client: Any = None

    @classmethod
    def check(cls) -> CheckResult:
        from launcher.targets.local.docker_client import DockerClient

        ok = DockerClient.engine_answers()
        return CheckResult(
            ok=True,
            details={"docker": "answers" if ok else "no engine (process runtime will be used)"},
        )

    def _docker(self) -> Any:
        if self._docker_client is None:
            try:
                from launcher.targets.local.docker_client import DockerClient
            except ImportError as e:
                raise TargetUnavailableError(
                    "the docker runtime needs the docker package",
                    hint="pip install 'launch[docker]', or --set targets.local.runtime=process",
                ) from e
            self._docker_client = DockerClient()
        return self._docker_client

    # ---- prepare / submit -------------------------------------------------------------------

    def _runtime(self, spec: Any) -> Literal["docker", "process"]:
        wanted = spec.targets.for_target("local").runtime
        if wanted != "auto":
            return wanted
        if spec.image is None:
            return "process"
        try:
            from launcher.targets.local.docker_client import DockerClient
        except ImportError:
            return "process"
        return "docker" if DockerClient.engine_answers() else "process"

    def _gpus(self, spec: Any, runtime: str) -> int | str:
        """GPUs to expose: 0, a count, or "all" (targets.local.gpus decides; default: the
        job's resources.gpu.count)."""
        opt = spec.targets.for_target("local").gpus
        want: int | str = (
            spec.resources.gpu.count if opt == "requested" else 0 if opt == "none" else opt
        )
        if not want:
            return 0
        if runtime == "docker":
            has, where = (
                self._docker().has_nvidia_runtime(),
                "the docker engine has no NVIDIA runtime",
            )
        else:
            has, where = shutil.which("nvidia-smi") is not None, "this machine has no nvidia-smi"
        if not has:
            raise TargetUnavailableError(
                f"the job asks for {want} GPU(s) but {where}",
                hint="run it on CPU with --set resources.gpu.count=0",
            )
        return want

    def prepare(self, spec: Any, run_id: str, workdir: Path) -> Prepared:
        runtime = self._runtime(spec)
        missing = [s for s in spec.secrets if s not in os.environ]
        if missing:
            raise TargetUnavailableError(
                f"secret(s) not set in this shell: {', '.join(missing)}",
                hint="export them before `launch run`; their values never enter the bundle",
            )
        gpus = self._gpus(spec, runtime)
        bundle = job_bundle(spec, self.home, self.notify)
        image: str | None = None
        python: str | None = None
        if runtime == "docker":
            from launcher.images import ensure_image

            # the build's own output is noise unless it fails; the error carries its tail
            ref = ensure_image(
                self._docker(),
                spec.project_root,
                spec.image,
                requirements=spec.targets.for_target("local").requirements,
                on_line=lambda _line: None,
                on_build=lambda tag: self.notify(f"building image {tag}"),
            )
            image = ref.tag
            if ref.built:
                self.notify(f"built {ref.tag} in {ref.seconds:.1f}s")
        else:
            req_name = spec.targets.for_target("local").requirements
            req = spec.project_root / "images" / spec.image / req_name if spec.image else None
            if req is not None and req_name != "requirements.txt" and not req.is_file():
                raise SubmitError(f"targets.local.requirements: {req} does not exist")
            python = str(process.ensure_env(self.home, req))
        inputs = local_inputs(spec, "local")
        config = agent_config(spec)
        return Prepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            image=image,
            secrets=list(spec.secrets),
            data={
                "runtime": runtime,
                "gpus": gpus,
                "python": python,
                "agent": config,
                "inputs": inputs,
            },
        )

    def submit(self, prepared: Prepared, ledger: Ledger) -> RunHandle:
        d = prepared.data
        root = self.home / "work" / prepared.run_id
        root.mkdir(parents=True, exist_ok=True)
        extract_bundle(prepared.bundle_path, root / agent_mod.BUNDLE)
        if prepared.resume_checkpoints is not None:
            # the agent points LAUNCH_RESUME_FROM at the newest of these
            shutil.copytree(
                prepared.resume_checkpoints, root / agent_mod.CHECKPOINTS, dirs_exist_ok=True
            )
        in_container = d["runtime"] == "docker"
        input_root = f"{CONTAINER_ROOT}/inputs" if in_container else str(root / "inputs")
        config = dict(d["agent"], run_id=prepared.run_id, input_dir=input_root)
        atomic_write_text(root / "agent.json", json.dumps(config, indent=1))
        secrets = {name: os.environ[name] for name in prepared.secrets if name in os.environ}
        if in_container:
            return self._submit_docker(prepared, root, secrets, ledger)
        return self._submit_process(prepared, root, secrets, ledger)

    def _submit_docker(
        self, prepared: Prepared, root: Path, secrets: dict[str, str], ledger: Ledger
    ) -> RunHandle:
        from launcher.targets.local.docker_client import LABEL_HOME, LABEL_RUN, home_key

        name = f"launch-{prepared.run_id}"
        mounts = [
            (str(root), CONTAINER_ROOT, False),
            (str(root / agent_mod.BUNDLE), f"{CONTAINER_ROOT}/{agent_mod.BUNDLE}", True),
        ]
        mounts += [
            (src, f"{CONTAINER_ROOT}/inputs/{n}", True)
            for n, src in prepared.data["inputs"].items()
        ]
        ticket = ledger.intent("container", name, {"root": str(root)})
        user = None if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        env = dict(secrets, HOME="/tmp") if user else dict(secrets)
        assert prepared.image is not None
        self._docker().run(
            name=name,
            image=prepared.image,
            command=[
                "python3",
                f"{CONTAINER_ROOT}/bundle/agent.py",
                "--root",
                CONTAINER_ROOT,
                "--config",
                f"{CONTAINER_ROOT}/agent.json",
            ],
            env=env,
            mounts=mounts,
            labels={LABEL_RUN: prepared.run_id, LABEL_HOME: home_key(str(self.home))},
            gpus=prepared.data["gpus"] or None,
            user=user,
            workdir=f"{CONTAINER_ROOT}/bundle/workload",
        )
        ledger.created(ticket)
        handle = LocalHandle(runtime="docker", root=str(root), container=name)
        return self._handle(prepared.run_id, handle)

    def _submit_process(
        self, prepared: Prepared, root: Path, secrets: dict[str, str], ledger: Ledger
    ) -> RunHandle:
        inputs = root / "inputs"
        inputs.mkdir(exist_ok=True)
        for n, src in prepared.data["inputs"].items():
            link = inputs / n
            if not link.exists():
                link.symlink_to(src)
        ticket = ledger.intent("process", f"agent:{prepared.run_id}", {"root": str(root)})
        python = Path(prepared.data["python"])
        # the job's `python3` must be the job virtualenv's, as it would be in the image
        env = dict(os.environ, **secrets)
        env["VIRTUAL_ENV"] = str(python.parent.parent)
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
        env.pop("PYTHONHOME", None)
        proc, ticks = process.spawn(
            python,
            root / agent_mod.BUNDLE / "agent.py",
            root,
            root / "agent.json",
            env,
        )
        self._children[proc.pid] = proc
        ledger.created(ticket, native_id=f"{proc.pid}:{ticks}")
        handle = LocalHandle(runtime="process", root=str(root), pid=proc.pid, pid_ticks=ticks)
        return self._handle(prepared.run_id, handle)

    def _handle(self, run_id: str, handle: LocalHandle) -> RunHandle:
        # this machine costs nothing by the hour; reports compare it at $0
        return RunHandle(
            target=self.name, run_id=run_id, data=handle.model_dump(), price_per_hour=Decimal(0)
        )

    # ---- watch ------------------------------------------------------------------------------

    @staticmethod
    def _agent_status(root: Path) -> dict[str, Any]:
        try:
            data = json.loads((root / agent_mod.STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return cast("dict[str, Any]", data) if isinstance(data, dict) else {}

    def status(self, handle: RunHandle) -> TargetStatus:
        h = LocalHandle.model_validate(handle.data)
        st = self._agent_status(Path(h.root))
        if h.runtime == "docker":
            assert h.container is not None
            coarse, code, native = self._docker().state(h.container)
        else:
            assert h.pid is not None
            running = process.alive(h.pid, h.pid_ticks, self._children.get(h.pid))
            coarse, code, native = ("running" if running else "exited"), None, ""
        if coarse in ("running", "starting", "unknown"):
            return agent_phase(st, alive=True)
        if st.get("phase") == "exited":
            return agent_phase(st, alive=False)
        if coarse == "exited" and code is not None:
            # the agent never reported (e.g. no python3 in the image): docker's code is all we have
            return TargetStatus(
                phase=Phase.FAILED,
                exit_code=code,
                message=f"the agent exited {code} before it could report; see `docker logs`",
            )
        return TargetStatus(phase=Phase.LOST, message=f"the job vanished ({native or 'gone'})")

    def read_logs(self, handle: RunHandle, cursor: int) -> tuple[list[LogLine], int]:
        path = Path(LocalHandle.model_validate(handle.data).root) / agent_mod.LOG_FILE
        try:
            with open(path, "rb") as f:
                f.seek(cursor)
                chunk = f.read()
        except FileNotFoundError:
            return [], cursor
        lines, used = parse_log_chunk(chunk)
        return lines, cursor + used

    def pull(self, handle: RunHandle, dest: Path) -> PullResult:
        root = Path(LocalHandle.model_validate(handle.data).root)
        if not root.is_dir():
            return PullResult(
                copied=[], skipped_unchanged=0, bytes_copied=0, changed_during_copy=[]
            )
        return pull_tree(LocalTree(root), dest, include=_pulled)

    # ---- stop / free ------------------------------------------------------------------------

    def cancel(self, handle: RunHandle) -> None:
        h = LocalHandle.model_validate(handle.data)
        root = Path(h.root)
        if root.is_dir():
            # the control file reaches the agent on every runtime; the signal is faster
            atomic_write_text(root / agent_mod.CONTROL_FILE, json.dumps({"desired": "stop"}))
        if h.runtime == "docker" and h.container:
            self._docker().signal(h.container, "SIGTERM")
        elif h.pid is not None:
            process.signal_group(h.pid, h.pid_ticks, signal.SIGTERM, self._children.get(h.pid))

    def kill(self, handle: RunHandle) -> None:
        h = LocalHandle.model_validate(handle.data)
        if h.runtime == "docker" and h.container:
            self._docker().signal(h.container, "SIGKILL")
            return
        if h.pid is not None:
            process.signal_group(h.pid, h.pid_ticks, signal.SIGKILL, self._children.get(h.pid))
        # the workload runs in its own session: the agent's group does not include it
        workload_pid = self._agent_status(Path(h.root)).get("pid")
        if isinstance(workload_pid, int):
            try:
                os.killpg(workload_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cleanup(self, handle: RunHandle, *, keep_data: bool = False) -> None:
        h = LocalHandle.model_validate(handle.data)
        if self.status(handle).phase in (Phase.RUNNING, Phase.STARTING):
            self.kill(handle)
        if h.runtime == "docker" and h.container:
            self._docker().remove(h.container)
        elif h.pid is not None:
            child = self._children.pop(h.pid, None)
            if child is not None:
                child.wait(timeout=10)
        if not keep_data:
            shutil.rmtree(h.root, ignore_errors=True)

    def plan(self, spec: Any) -> Plan:
        from launcher.targets.local.plan import plan_local

        return plan_local(self, spec)

    def labelled(self) -> list[tuple[str, str, str]]:
        """Containers this launch home created: (name, run id, docker status)."""
        try:
            from launcher.targets.local.docker_client import DockerClient
        except ImportError:
            return []
        if not DockerClient.engine_answers():
            return []
        return self._docker().labelled(str(self.home))

    def release_resource(self, kind: str, native_id: str, data: Mapping[str, Any]) -> None:
        if kind == "container":
            self._docker().remove(native_id)
        elif kind == "process" and ":" in native_id and native_id.split(":")[0].isdigit():
            pid, ticks = native_id.split(":", 1)
            process.signal_group(int(pid), ticks, signal.SIGKILL)
