"""One Kaggle session of a run: pushing its kernel, and reading how it ended."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import SubmitError, TargetUnavailableError
from launcher.lowering import lower_job
from launcher.targets.base import AttemptSpec, Ledger, Phase
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import AgentStatus, agent_phase
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle.client import KaggleClient, KernelSession
from launcher.targets.kaggle.handle import BundleParts, KaggleHandle, KagglePrepared, KernelJob
from launcher.targets.kaggle.kernel import kernel_source
from launcher.targets.kaggle.lowering import gpu_problems
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.kaggle.rpc import KernelInfo

if TYPE_CHECKING:
    from launcher.spec import JobSpec


def push_kernel(
    client: KaggleClient,
    prepared: KagglePrepared,
    h: KaggleHandle,
    ledger: Ledger,
    state: tuple[str, str] | None,
    notify: Callable[[str], None],
    store: str,
) -> KaggleHandle:
    """Push the kernel of session `h.attempt` (the ledger hears of it first); `state` is the
    (file, sha256) of the archive in `h.state_slug`, for a resumed session; `store` is the key
    of the store pushing it, which its title carries."""
    parts = bundle_parts(prepared)
    config: dict[str, Any] = dict(
        prepared.kernel.model_dump(),
        agent=prepared.agent.for_attempt(
            prepared.run_id, AttemptSpec(number=h.attempt), input_dir=""
        ),
        run_id=prepared.run_id,
        session=h.attempt,
        bundle_slug=h.bundle_ref.split("/")[1],
        bundle_file=parts.code_file,
        bundle_sha256=parts.code[1],
        state_slug=h.state_slug if state else None,
        state_file=state[0] if state else None,
        state_sha256=state[1] if state else None,
        job_left_s=h.job_left_s,
    )
    sources = [h.bundle_ref, *h.input_refs, *prepared.sources]
    if state and h.state_slug:
        sources.append(f"{h.owner}/{h.state_slug}")
    title = names.kernel_title(prepared.run_id, h.attempt, store)
    ticket = ledger.intent("kernel", h.kernel_ref, {"title": title})
    pushed = client.save_kernel(
        h.kernel_ref,
        title=title,
        source=kernel_source(config),
        accelerator=prepared.accelerator,
        internet=prepared.internet,
        sources=sources,
        timeout_s=prepared.kernel.session_s,
    )
    if pushed.error:
        raise SubmitError(f"Kaggle rejected the kernel push: {pushed.error}")
    if pushed.invalid_sources:
        raise SubmitError(
            f"Kaggle does not know the dataset(s) {', '.join(pushed.invalid_sources)}",
            hint=f"check `inputs:`: each must exist and be visible to {h.owner}",
        )
    ledger.created(ticket, native_id=h.kernel_ref)
    notify(
        f"pushed kernel {h.kernel_ref} (session {h.attempt}, version "
        f"{pushed.version}): {pushed.url}".rstrip(": ")
    )
    return h.model_copy(update={"kernel_id": pushed.kernel_id, "pushed_at": time.time()})


def bundle_parts(prepared: KagglePrepared) -> BundleParts:
    """The parts the bundle travels in (a run prepared before the split: the whole bundle)."""
    if prepared.parts is not None:
        return prepared.parts
    return BundleParts(code=(str(prepared.bundle_path), prepared.bundle_digest))


def ended_status(h: KaggleHandle, native: KernelSession, st: AgentStatus | None) -> TS:
    """How an ended session ended: the agent's status.json among its outputs (`st`), else
    Kaggle's own words."""
    why = native.failure_message
    common: dict[str, Any] = {
        "last_checkpoint": st.last_checkpoint if st else None,
        "last_metrics": st.last_metrics if st else None,
    }
    if native.status == "ERROR" and "quota" in why.lower():
        return TS(
            phase=Phase.PREEMPTED,
            stop_reason="quota",
            message=f"Kaggle ended session {h.attempt}: {why}",
            **common,
        )
    if native.status == "ERROR" and "timed out" in why.lower():
        # Kaggle's cap ended the session: its SIGTERM reached the agent as a signal, which is
        # not the user's cancel; the checkpoint saved then is where to go on
        return TS(
            phase=Phase.STOPPED,
            stop_reason="time_limit",
            message=f"Kaggle ended session {h.attempt}: {why}",
            **common,
        )
    if st is not None and st.phase == "exited":
        result = agent_phase(st, alive=False)
        return result.model_copy(update={"message": st.error}) if st.error else result
    if native.status == "CANCEL_ACKNOWLEDGED":
        return TS(phase=Phase.STOPPED, stop_reason="signal", message="cancelled on Kaggle")
    return TS(
        phase=Phase.FAILED,
        message=f"Kaggle kernel {h.kernel_ref} ended {native.status}: "
        + (why or "without the agent's status.json"),
    )


def launch_kernels(client: KaggleClient) -> list[tuple[KernelInfo, str, str]]:
    """Kernels whose slug and title say launch made them: (kernel, run id, key of the store
    that pushed it, "" for an older launch's)."""
    found: list[tuple[KernelInfo, str, str]] = []
    for k in client.my_kernels():
        parsed = names.parse_title(k.title)
        if parsed is not None and k.slug.startswith(names.PREFIX):
            found.append((k, *parsed))
    return found


def explain_secrets(home: Path, secrets: list[str], notify: Callable[[str], None]) -> None:
    """Once per set of names: Kaggle keeps secrets itself, the launcher never sends them."""
    key = hashlib.sha256(" ".join(sorted(secrets)).encode()).hexdigest()[:16]
    mark = home / "kaggle" / f"secrets-explained-{key}"
    if mark.exists():
        return
    notify(
        f"this job reads the secret(s) {', '.join(secrets)} on Kaggle, from Kaggle's own "
        "store (launch never uploads secret values): on kaggle.com open the kernel this run "
        "pushes, Add-ons -> Secrets, add each name with its value and attach it"
    )
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()


def kernel_job(
    spec: JobSpec, opts: KaggleOptions, home: Path, notify: Callable[[str], None]
) -> KernelJob:
    """The job's part of every session's kernel configuration. What the image or the job needs
    that Kaggle cannot give: a requirement Kaggle's GPU cannot run is refused (with the fix)
    before anything is pushed, the rest is warned about."""
    lowered = lower_job(spec, "kaggle", opts.requirements, home, notify)
    if lowered.problems:
        what, fix = lowered.problems[0]
        raise TargetUnavailableError(what, hint=fix)
    for warning in lowered.warnings:
        notify(f"warning: {warning}")
    if spec.resources.gpu.count > 0:
        for problem in gpu_problems(spec, opts.accelerator):
            notify(f"warning: Kaggle cannot give what the job asks: {problem}")
    if spec.secrets:
        explain_secrets(home, list(spec.secrets), notify)
    session_s = opts.session_hours * 3600
    hours = spec.limits.max_hours
    if hours and hours * 3600 > session_s and not opts.allow_chaining:
        notify(
            f"warning: the job may run {hours:g} h, longer than a Kaggle session "
            f"({opts.session_hours:g} h), and targets.kaggle.allow_chaining is off: it stops "
            "at the session's end with a checkpoint (`launch run --resume-from` goes on)"
        )
    return KernelJob(
        requirements=lowered.requirements,
        pip_options=lowered.pip_options,
        secrets=list(spec.secrets),
        inputs=[(str(i.name), str(i.kaggle).split("/")[1]) for i in spec.inputs if i.kaggle],
        session_s=session_s,
        safety_s=min(60.0, max(1.0, 0.1 * session_s)),
    )
