"""An instance's life on Vast: rent the best offer (ledger first), read its status, destroy it.
No SSH here; `target.py` drives these steps from `submit` and `advance`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from launcher.errors import NoCapacityError, TargetError
from launcher.store.identity import is_store_key, store_key
from launcher.targets.base import AttemptSpec, Ledger, Phase
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.client import VastClient
from launcher.targets.vast.ssh import ensure_key
from launcher.targets.vast.workspace import VastHandle, VastPrepared

# `launch:<store key>:<run id>`. The store key says which store rented it (launcher/store/
# identity.py); a launch from before it labelled `launch-<run id>`, which names no store. The new
# form does not start with the old prefix, so an older launch's gc leaves it alone.
LABEL_PREFIX = "launch:"
LEGACY_PREFIX = "launch-"
MAX_OFFERS_TRIED = 3  # creates tried per rental before giving up

# "will never reach running: destroy and retry" (Vast's OpenAPI quirks)
DEAD = frozenset({"exited", "unknown", "offline"})
# Vast's actual_status -> where the machine is. "Intended running, actual stopped" is how an
# outbid interruptible instance looks; exited/unknown/offline never come back to running. Either
# way the attempt is over: the orchestrator starts the next one elsewhere.
NATIVE_STATUS: Mapping[str | None, Phase] = {
    None: Phase.PROVISIONING,
    "created": Phase.PROVISIONING,
    "loading": Phase.PROVISIONING,
    "rebooting": Phase.PROVISIONING,
    "running": Phase.RUNNING,
    "stopped": Phase.PREEMPTED,
    "frozen": Phase.PREEMPTED,
    "exited": Phase.PREEMPTED,
    "unknown": Phase.PREEMPTED,
    "offline": Phase.PREEMPTED,
}


def run_label(run_id: str, owner: str) -> str:
    return f"{LABEL_PREFIX}{owner}:{run_id}"


def parse_label(label: object) -> tuple[str, str] | None:
    """(run id, store key) of a label launch made, the key "" for an older launch's label;
    None for anyone else's label."""
    text = str(label or "")
    if text.startswith(LEGACY_PREFIX):
        run_id = text[len(LEGACY_PREFIX) :]
        return (run_id, "") if run_id else None
    owner, sep, run_id = text[len(LABEL_PREFIX) :].partition(":")
    if text.startswith(LABEL_PREFIX) and sep and run_id and is_store_key(owner):
        return run_id, owner
    return None


def destroy_labelled(client: VastClient, label: str) -> None:
    for row in client.instances_labelled(label):
        client.destroy_instance(row.id)


def rent(
    client: VastClient,
    home: Path,
    prepared: VastPrepared,
    attempt: AttemptSpec,
    tried: list[int],
    ledger: Ledger,
    notify: Callable[[str], None],
) -> VastHandle:
    """Rent the best fitting offer not tried yet; the ledger hears of it first."""
    opts = prepared.options
    label = run_label(prepared.run_id, store_key(home))
    found = [o for o in client.search_offers(prepared.query) if int(o["id"]) not in tried]
    if not found:
        raise NoCapacityError(
            "no Vast offer fits this job right now",
            hint="`launch plan` shows which filter excludes the most offers; relax "
            "targets.vast (max_dph, min_reliability, min_cuda) or the GPU types",
        )
    _key_path, public = ensure_key(home)
    ticket = ledger.intent("instance", label, {"label": label})
    last: TargetError | None = None
    for offer in offers_mod.rank(found, opts)[:MAX_OFFERS_TRIED]:
        payload: dict[str, Any] = {
            "client_id": "me",
            "image": prepared.image,
            "disk": prepared.disk_gb,
            "label": label,
            "env": {},
            "price": offers_mod.bid_price(offer, opts),
            # Vast's ssh mode skips the ENTRYPOINT and runs this after its sshd; the key is
            # also attached through the API once the instance runs
            "onstart": f"mkdir -p /root/.ssh && echo {shlex.quote(public)} "
            ">> /root/.ssh/authorized_keys",
            "runtype": "ssh",
        }
        tried = [*tried, int(offer["id"])]
        try:
            iid = client.create_instance(int(offer["id"]), payload)
        except TargetError as e:
            last = e
            # the service may have rented it before the answer was lost: never keep a twin
            destroy_labelled(client, label)
            notify(f"could not rent {offers_mod.describe(offer)}: {e.message}")
            continue
        ledger.created(ticket, native_id=str(iid))
        notify(f"rented {offers_mod.describe(offer)} as instance {iid}")
        dph = offers_mod.price(offer, opts)  # the instance's own figure replaces it later
        return VastHandle(
            run_id=prepared.run_id,
            attempt=attempt.number,
            # billed from the create on: Vast charges storage (and a running GPU) at once
            price_per_hour=Decimal(str(dph)),
            instance_id=iid,
            offer_id=int(offer["id"]),
            label=label,
            dph_total=dph,
            gpu=f"{offer.get('num_gpus')}x {offer.get('gpu_name')}",
            tried=tried,
            resume_from=str(attempt.resume_from) if attempt.resume_from else None,
            resume_skip=list(attempt.resume_skip),
            time_left_s=attempt.time_left_s,
        )
    assert last is not None
    raise last
