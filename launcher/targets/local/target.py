"""The local target: this machine, with the job's image on docker or as a plain process.

Both runtimes share one workspace layout under $LAUNCH_HOME/work/<run_id> (the same layout the
agent uses on every platform; a later attempt gets <run_id>.a<N>); they differ only in how the
agent is started and watched. Status, logs and pulls read the workspace, so they work the same
after the launcher died and came back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from launcher import agent as agent_mod
from launcher.attempts import copy_resume_sources
from launcher.bundle import extract_bundle
from launcher.errors import SubmitError, TargetUnavailableError
from launcher.inputs import InputWays, Way
from launcher.progress import MeterFactory
from launcher.sync import LocalTree, PullResult, atomic_write_text, pull_tree
from launcher.targets.base import (
    AttemptSpec,
    CheckResult,
    Handle,
    Ledger,
    LogLine,
    Notify,
    Phase,
    Plan,
    Prepared,
    Target,
    TargetStatus,
)
from launcher.targets.jobfiles import (
    AgentStatus,
    agent_config,
    agent_phase,
    job_bundle,
    job_inputs,
    parse_log_chunk,
)
from launcher.targets.local import process

if TYPE_CHECKING:
    from launcher.spec import JobSpec

CONTAINER_ROOT = "/launch"
PULLED_DIRS = frozenset({agent_mod.OUTPUTS, agent_mod.CHECKPOINTS, agent_mod.LOGS})


class LocalPrepared(Prepared):
    runtime: Literal["docker", "process"]
    gpus: int | str = 0  # 0, a count, or "all"
    image: str | None = None  # the built image tag (docker)
    python: str | None = None  # the job virtualenv's python (process)
    inputs: dict[str, str] = Field(default_factory=dict[str, str])  # name -> local path


class LocalHandle(Handle):
    runtime: Literal["docker", "process"]
    root: str
    container: str | None = None
    pid: int | None = None
    pid_ticks: str = ""


def _pulled(path: str) -> bool:
    return path.split("/", 1)[0] in PULLED_DIRS or path == agent_mod.STATUS_FILE


class LocalTarget(Target[LocalPrepared, LocalHandle]):
    name: ClassVar[str] = "local"
    prepared_model: ClassVar[type[Prepared]] = LocalPrepared
    handle_model: ClassVar[type[Handle]] = LocalHandle
    # this machine downloads a dataset or a URL once into its input cache, then mounts it
    input_ways: ClassVar[InputWays] = InputWays(
        path=(Way.MOUNT,), kaggle=(Way.FETCH_HERE,), url=(Way.FETCH_HERE,), hf=(Way.FETCH_HERE,)
    )

    def __init__(
        self, home: Path, notify: Notify = lambda _m: None, meter: MeterFactory | None = None
    ) -> None:
        super().__init__(home, notify, meter)
        # the agents this process started, to reap them; a fresh process reads /proc instead
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

    def _runtime(self, spec: JobSpec) -> Literal["docker", "process"]:
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

    def _gpus(self, spec: JobSpec, runtime: str) -> int | str:
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

    def prepare(self, spec: JobSpec, run_id: str, workdir: Path) -> LocalPrepared:
        runtime = self._runtime(spec)
        missing = [s for s in spec.secrets if s not in os.environ]
        if missing:
            raise TargetUnavailableError(
                f"secret(s) not set in this shell: {', '.join(missing)}",
                hint="export them before `launch run`; their values never enter the bundle",
            )
        gpus = self._gpus(spec, runtime)
        inputs = job_inputs(spec, type(self), self.notify)  # downloads happen here, cached
        bundle = job_bundle(spec, self.home, self.notify)
        image: str | None = None
        python: str | None = None
        if runtime == "docker" and spec.image_ref is not None:
            if self._docker().image_id(spec.image_ref) is None:
                self.notify(f"pulling {spec.image_ref}")
                self._docker().pull(spec.image_ref)
            image = spec.image_ref
        elif runtime == "docker":
            from launcher.images import build_steps, ensure_image, requirements_for

            # the build's own output is noise unless it fails; the error carries its tail
            assert spec.image is not None  # auto picks docker only for a job with an image
            ref = ensure_image(
                self._docker(),
                spec.project_root,
                spec.image,
                requirements=requirements_for(spec, spec.targets.for_target("local").requirements),
                on_line=build_steps(self.notify),
                on_build=lambda tag: self.notify(f"building image {tag}"),
            )
            image = ref.tag
            if ref.built:
                self.notify(f"built {ref.tag} in {ref.seconds:.1f}s")
        else:
            if spec.image_ref is not None:
                raise TargetUnavailableError(
                    f"the process runtime builds a virtualenv from an image folder's "
                    f"requirements; {spec.image_ref} is a registry image",
                    hint="run it on docker (targets.local.runtime: docker), or name an image "
                    "folder under images/",
                )
            from launcher.images import requirements_for

            req_name = requirements_for(spec, spec.targets.for_target("local").requirements)
            req = spec.image_dir / req_name if spec.image_dir else None
            if req is not None and req_name != "requirements.txt" and not req.is_file():
                raise SubmitError(f"targets.local.requirements: {req} does not exist")
            python = str(process.ensure_env(self.home, req))
        return LocalPrepared(
            run_id=run_id,
            bundle_path=bundle.path,
            bundle_digest=bundle.digest,
            agent=agent_config(spec, inputs),
            secrets=list(spec.secrets),
            more_attempts_hint="limits.max_attempts lets a run go on after its job died",
            runtime=runtime,
            gpus=gpus,
            image=image,
            python=python,
            inputs=inputs.local,
        )

    def submit(
        self,
        prepared: LocalPrepared,
        ledger: Ledger,
        attempt: AttemptSpec,
        previous: LocalHandle | None,
    ) -> LocalHandle:
        suffix = "" if attempt.number == 1 else f".a{attempt.number}"
        root = self.home / "work" / f"{prepared.run_id}{suffix}"
        root.mkdir(parents=True, exist_ok=True)
        extract_bundle(prepared.bundle_path, root / agent_mod.BUNDLE)
        if attempt.resume_from is not None:
            # the agent points LAUNCH_RESUME_FROM at the newest checkpoint among these
            copy_resume_sources(attempt.resume_from, root, attempt.resume_skip)
        in_container = prepared.runtime == "docker"
        input_root = f"{CONTAINER_ROOT}/inputs" if in_container else str(root / "inputs")
        config = prepared.agent.for_attempt(prepared.run_id, attempt, input_root)
        atomic_write_text(root / "agent.json", json.dumps(config, indent=1))
        secrets = {name: os.environ[name] for name in prepared.secrets if name in os.environ}
        if in_container:
            return self._submit_docker(prepared, attempt, root, secrets, ledger)
        return self._submit_process(prepared, attempt, root, secrets, ledger)

    def _submit_docker(
        self,
        prepared: LocalPrepared,
        attempt: AttemptSpec,
        root: Path,
        secrets: dict[str, str],
        ledger: Ledger,
    ) -> LocalHandle:
        from launcher.targets.local.docker_client import LABEL_HOME, LABEL_RUN, home_key

        suffix = "" if attempt.number == 1 else f"-a{attempt.number}"
        name = f"launch-{prepared.run_id}{suffix}"
        mounts = [
            (str(root), CONTAINER_ROOT, False),
            (str(root / agent_mod.BUNDLE), f"{CONTAINER_ROOT}/{agent_mod.BUNDLE}", True),
        ]
        mounts += [
            (src, f"{CONTAINER_ROOT}/inputs/{n}", True) for n, src in prepared.inputs.items()
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
            gpus=prepared.gpus or None,
            user=user,
            workdir=f"{CONTAINER_ROOT}/bundle/workload",
        )
        ledger.created(ticket)
        return LocalHandle(
            run_id=prepared.run_id,
            attempt=attempt.number,
            price_per_hour=Decimal(0),  # this machine costs nothing by the hour
            runtime="docker",
            root=str(root),
            container=name,
        )

    def _submit_process(
        self,
        prepared: LocalPrepared,
        attempt: AttemptSpec,
        root: Path,
        secrets: dict[str, str],
        ledger: Ledger,
    ) -> LocalHandle:
        inputs = root / "inputs"
        inputs.mkdir(exist_ok=True)
        for n, src in prepared.inputs.items():
            link = inputs / n
            if not link.exists():
                link.symlink_to(src)
        ticket = ledger.intent("process", f"agent:{prepared.run_id}", {"root": str(root)})
        assert prepared.python is not None
        python = Path(prepared.python)
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
        return LocalHandle(
            run_id=prepared.run_id,
            attempt=attempt.number,
            price_per_hour=Decimal(0),
            runtime="process",
            root=str(root),
            pid=proc.pid,
            pid_ticks=ticks,
        )

    def describe(self, handle: LocalHandle) -> str:
        if handle.runtime == "docker":
            return f"container {handle.container} on this machine"
        return f"process {handle.pid} on this machine"

    # ---- watch ------------------------------------------------------------------------------

    def status(self, handle: LocalHandle) -> TargetStatus:
        h = handle
        st = AgentStatus.read(Path(h.root) / agent_mod.STATUS_FILE)
        if h.runtime == "docker":
            assert h.container is not None
            coarse, code, native = self._docker().state(h.container)
        else:
            assert h.pid is not None
            running = process.alive(h.pid, h.pid_ticks, self._children.get(h.pid))
            coarse, code, native = ("running" if running else "exited"), None, ""
        if coarse in ("running", "starting", "unknown"):
            return agent_phase(st, alive=True)
        if st.phase == "exited":
            return agent_phase(st, alive=False)
        if coarse == "exited" and code is not None and st.phase is not None:
            # it ran and was killed from outside (the OOM killer, `docker kill`, an engine
            # restart): the job can go on from its checkpoint in another attempt
            return TargetStatus(
                phase=Phase.LOST,
                exit_code=code,
                message=f"container {h.container} was killed (exit {code}) while the job ran",
            )
        if coarse == "exited" and code is not None:
            # the agent never reported (e.g. no python3 in the image): docker's code is all we have
            return TargetStatus(
                phase=Phase.FAILED,
                exit_code=code,
                message=f"the agent exited {code} before it could report; see `docker logs`",
            )
        return TargetStatus(phase=Phase.LOST, message=f"the job vanished ({native or 'gone'})")

    def read_logs(self, handle: LocalHandle, cursor: int) -> tuple[list[LogLine], int]:
        path = Path(handle.root) / agent_mod.LOG_FILE
        try:
            with open(path, "rb") as f:
                f.seek(cursor)
                chunk = f.read()
        except FileNotFoundError:
            return [], cursor
        lines, used = parse_log_chunk(chunk)
        return lines, cursor + used

    def pull(self, handle: LocalHandle, dest: Path) -> PullResult:
        root = Path(handle.root)
        if not root.is_dir():
            return PullResult()
        return pull_tree(LocalTree(root), dest, include=_pulled, meter=self.meter("pull outputs"))

    # ---- stop / free ------------------------------------------------------------------------

    def cancel(self, handle: LocalHandle) -> None:
        h = handle
        root = Path(h.root)
        if root.is_dir():
            # the control file reaches the agent on every runtime; the signal is faster
            atomic_write_text(root / agent_mod.CONTROL_FILE, json.dumps({"desired": "stop"}))
        if h.runtime == "docker" and h.container:
            self._docker().signal(h.container, "SIGTERM")
        elif h.pid is not None:
            process.signal_group(h.pid, h.pid_ticks, signal.SIGTERM, self._children.get(h.pid))

    def kill(self, handle: LocalHandle) -> None:
        h = handle
        if h.runtime == "docker" and h.container:
            self._docker().signal(h.container, "SIGKILL")
            return
        if h.pid is not None:
            process.signal_group(h.pid, h.pid_ticks, signal.SIGKILL, self._children.get(h.pid))
        # the workload runs in its own session: the agent's group does not include it
        _kill_workload(AgentStatus.read(Path(h.root) / agent_mod.STATUS_FILE))

    def cleanup(self, handle: LocalHandle, *, keep_data: bool = False) -> None:
        h = handle
        if AgentStatus.read(Path(h.root) / agent_mod.STATUS_FILE).phase != "exited":
            # still running, or its agent died and left the workload (its own session) behind
            self.kill(handle)
        if h.runtime == "docker" and h.container:
            self._docker().remove(h.container)
        elif h.pid is not None:
            child = self._children.pop(h.pid, None)
            if child is not None:
                child.wait(timeout=10)
        if not keep_data:
            shutil.rmtree(h.root, ignore_errors=True)

    def plan(self, spec: JobSpec) -> Plan:
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
            alive = process.alive(int(pid), ticks)
            process.signal_group(int(pid), ticks, signal.SIGKILL)
            root = data.get("root")
            status = AgentStatus.read(Path(str(root)) / agent_mod.STATUS_FILE) if root else None
            if alive and status is not None:
                # the workload runs in its own session: the agent's group does not include it
                _kill_workload(status)


def _kill_workload(status: AgentStatus) -> None:
    """SIGKILL the workload's process group, only while its pid is still the workload's (the
    start time the agent wrote; an older agent's status has none: then the pid alone)."""
    if status.pid is None:
        return
    if status.pid_start is not None and process.process_start(status.pid) != status.pid_start:
        return  # it ended, and its number may be someone else's by now
    try:
        os.killpg(status.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
