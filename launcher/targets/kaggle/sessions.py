"""One Kaggle session of a run: pushing its kernel, reading how it ended, and whether the run
goes on in another session (chaining across Kaggle's session cap)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from launcher.errors import SubmitError
from launcher.targets.base import Ledger, Phase
from launcher.targets.base import TargetStatus as TS
from launcher.targets.jobfiles import agent_config, agent_phase
from launcher.targets.kaggle import handle as names
from launcher.targets.kaggle import outputs
from launcher.targets.kaggle.client import KaggleClient, KaggleNotFoundError, rows
from launcher.targets.kaggle.handle import KaggleHandle
from launcher.targets.kaggle.kernel import kernel_source
from launcher.targets.kaggle.lowering import gpu_problems, lower_image
from launcher.targets.kaggle.options import KaggleOptions
from launcher.targets.kaggle.plan import quota_left


def push_kernel(
    client: KaggleClient,
    h: KaggleHandle,
    ledger: Ledger,
    state: tuple[str, str] | None,
    notify: Callable[[str], None],
) -> KaggleHandle:
    """Push the kernel of session `h.session` (the ledger hears of it first); `state` is the
    (file, sha256) of the state dataset's current version, for a continued run."""
    left = None if h.job_limit_s is None else max(1.0, h.job_limit_s - h.used_s)
    config = dict(
        h.kernel_config,
        run_id=h.run_id,
        session=h.session,
        bundle_slug=h.bundle_ref.split("/")[1],
        bundle_file=h.bundle_file,
        bundle_sha256=h.bundle_sha256,
        state_slug=h.state_slug if state else None,
        state_file=state[0] if state else None,
        state_sha256=state[1] if state else None,
        job_left_s=left,
    )
    sources = [h.bundle_ref, *h.sources]
    if state:
        sources.append(f"{h.owner}/{h.state_slug}/versions/{h.state_version}")
    tpu = bool(h.accelerator) and str(h.accelerator).startswith("Tpu")
    body: dict[str, Any] = {
        "slug": h.kernel_ref,
        "newTitle": names.kernel_title(h.run_id, h.session),
        "text": kernel_source(config),
        "language": "python",
        "kernelType": "script",
        "isPrivate": True,
        "enableGpu": bool(h.accelerator) and not tpu,
        "enableTpu": tpu,
        "enableInternet": h.internet,
        "datasetDataSources": sources,
        "sessionTimeoutSeconds": int(h.session_s),
    }
    if h.accelerator:
        body["machineShape"] = h.accelerator
    ticket = ledger.intent("kernel", h.kernel_ref, {"title": body["newTitle"]})
    resp = client.call("kernels", "save_kernel", body)
    if resp.get("error"):  # a 200 answer: the kaggle CLI prints it and exits 0
        raise SubmitError(f"Kaggle rejected the kernel push: {resp['error']}")
    found: list[Any] = list(resp.get("invalidDatasetSources") or [])
    invalid = [str(x) for x in found]
    if invalid:
        raise SubmitError(
            f"Kaggle does not know the dataset(s) {', '.join(invalid)}",
            hint=f"check `inputs:`: each must exist and be visible to {h.owner}",
        )
    ledger.created(ticket, native_id=h.kernel_ref)
    kid = resp.get("kernelId")
    notify(
        f"pushed kernel {h.kernel_ref} (session {h.session}, version "
        f"{resp.get('versionNumber')}): {resp.get('url') or ''}".rstrip(": ")
    )
    return h.model_copy(
        update={
            "kernel_id": int(kid) if kid is not None else None,
            "kernels": [*h.kernels, h.kernel_slug],
        }
    )


def ended_status(h: KaggleHandle, native: Mapping[str, Any], cache: Path) -> TS:
    """How an ended session ended: the agent's status.json among its outputs (fetched into
    `cache`), else Kaggle's own words."""
    state = str(native.get("status") or "").upper()
    why = str(native.get("failureMessage") or "")
    st = outputs.read_status(cache)
    if state == "ERROR" and ("timed out" in why.lower() or "quota" in why.lower()):
        # Kaggle's cap (or the quota) ended the session: its SIGTERM reached the agent as a
        # signal, which is not the user's cancel; the checkpoint saved then is where to go on
        return TS(
            phase=Phase.STOPPED,
            stop_reason="time_limit",
            message=f"Kaggle ended session {h.session}: {why}",
            last_checkpoint=(st or {}).get("last_checkpoint"),
            last_metrics=(st or {}).get("last_metrics"),
        )
    if st is not None and st.get("phase") == "exited":
        result = agent_phase(st, alive=False)
        if st.get("error"):
            result = result.model_copy(update={"message": str(st["error"])})
        return result
    if state == "CANCEL_ACKNOWLEDGED":
        return TS(phase=Phase.STOPPED, stop_reason="signal", message="cancelled on Kaggle")
    return TS(
        phase=Phase.FAILED,
        message=f"Kaggle kernel {h.kernel_ref} ended {state}: "
        + (why or "without the agent's status.json"),
    )


def margin(h: KaggleHandle) -> float:
    agent: dict[str, Any] = h.kernel_config.get("agent") or {}
    return float(agent.get("stop_margin_s") or 0) + 1.0


def chain_blocker(
    client: KaggleClient, h: KaggleHandle, st: TS, ran_s: float, cancelled: bool
) -> str | None:
    """None when the ended session (`st`, which ran `ran_s`) should go on in another session;
    else why not."""
    if st.phase is not Phase.STOPPED or st.stop_reason != "time_limit":
        return "not stopped by a time limit"
    if cancelled:
        return "cancelled"
    if h.job_limit_s is not None and h.used_s + ran_s >= h.job_limit_s - 2 * margin(h):
        return f"the job used its limit of {h.job_limit_s / 3600:g} h"
    if not h.allow_chaining:
        return (
            f"the job needs more than one Kaggle session ({h.session_s / 3600:g} h each) "
            "and targets.kaggle.allow_chaining is off"
        )
    if h.session >= h.max_sessions:
        return f"the run used its {h.max_sessions} sessions (targets.kaggle.max_sessions)"
    if h.accelerator:
        left = quota_left(client, h.accelerator)[1]
        if left is not None and left < 2 * margin(h):
            return (
                f"the weekly Kaggle quota is used up ({left / 3600:.2f} h left): continue "
                f"after it refreshes with `launch run ... --resume-from {h.run_id}`"
            )
    return None


def delete_kernel(client: KaggleClient, owner: str, slug: str) -> None:
    """Delete a kernel (Kaggle stops its session); silent when it is already gone."""
    try:
        client.call("kernels", "delete_kernel", {"userName": owner, "kernelSlug": slug})
    except KaggleNotFoundError:
        pass


def labelled_kernels(client: KaggleClient) -> list[tuple[str, str, str]]:
    """Kernels whose title says launch made them: (owner/slug, run id, "kernel")."""
    found: list[tuple[str, str, str]] = []
    token = ""
    for _page in range(100):
        body = {"group": "PROFILE", "pageSize": 100, "pageToken": token}
        resp = client.call("kernels", "list_kernels", body)
        for k in rows(resp, "kernels"):
            run = names.run_of_title(str(k.get("title") or ""))
            if run is not None and str(k.get("slug") or "").startswith(names.PREFIX):
                found.append((str(k.get("ref") or ""), run, "kernel"))
        token = str(resp.get("nextPageToken") or "")
        if not token:
            break
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


def kernel_config(
    spec: Any, opts: KaggleOptions, home: Path, notify: Callable[[str], None]
) -> dict[str, Any]:
    """The job's part of every session's kernel configuration; warns (before anything is
    pushed) about what the image or the job needs that Kaggle cannot give."""
    lowered = lower_image(spec.image_dir)
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
    return {
        "agent": agent_config(spec),
        "requirements": lowered.requirements,
        "pip_options": lowered.pip_options,
        "secrets": list(spec.secrets),
        "inputs": [[str(i.name), str(i.kaggle).split("/")[1]] for i in spec.inputs],
        "session_s": session_s,
        # the kernel's own start and the output save must fit in the session too
        "safety_s": min(60.0, max(1.0, 0.1 * session_s)),
    }
