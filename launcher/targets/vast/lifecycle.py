"""An instance's life on Vast: rent the best offer (ledger first), read its status, replace it,
destroy it. No SSH here; `target.py` drives these steps from `submit` and `advance`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from launcher.errors import NoCapacityError, TargetError
from launcher.targets.base import Ledger, Phase
from launcher.targets.vast import offers as offers_mod
from launcher.targets.vast.client import VastClient
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.ssh import ensure_key
from launcher.targets.vast.workspace import Attempt, VastHandle

LABEL_PREFIX = "launch-"
MAX_OFFERS_TRIED = 3  # creates tried per rental before giving up

# "will never reach running: destroy and retry" (Vast's OpenAPI quirks)
DEAD = frozenset({"exited", "unknown", "offline"})
# Vast's actual_status -> where the machine is. "Intended running, actual stopped" is how an
# outbid interruptible instance looks; exited/unknown/offline never come back to running.
NATIVE_STATUS: Mapping[str | None, Phase] = {
    None: Phase.PROVISIONING,
    "created": Phase.PROVISIONING,
    "loading": Phase.PROVISIONING,
    "rebooting": Phase.PROVISIONING,
    "running": Phase.RUNNING,
    "stopped": Phase.LOST,
    "frozen": Phase.LOST,
    "exited": Phase.LOST,
    "unknown": Phase.LOST,
    "offline": Phase.LOST,
}


def preempted(row: Mapping[str, Any]) -> bool:
    """Intended running, actually not: outbid (stopped) or its host went away."""
    actual = row.get("actual_status")
    return row.get("intended_status") == "running" and actual in ("stopped", *DEAD)


def ssh_address(row: Mapping[str, Any]) -> tuple[str, int] | None:
    """Direct (public ip + mapped 22/tcp) when the host offers it, else Vast's ssh proxy."""
    ports = cast("dict[str, Any]", row.get("ports") or {})
    bind = cast("list[dict[str, Any]]", ports.get("22/tcp") or [])
    if bind and bind[0].get("HostPort") and row.get("public_ipaddr"):
        return str(row["public_ipaddr"]), int(bind[0]["HostPort"])
    if row.get("ssh_host") and row.get("ssh_port"):
        return str(row["ssh_host"]), int(row["ssh_port"])
    return None


def ours(label: object) -> str | None:
    """The run id a label of ours names (`launch-<run id>`), or None for anyone else's label."""
    text = str(label or "")
    run_id = text[len(LABEL_PREFIX) :]
    return run_id if text.startswith(LABEL_PREFIX) and run_id else None


def destroy_labelled(client: VastClient, label: str) -> None:
    for row in client.instances_labelled(label):
        client.destroy_instance(int(row["id"]))


def rent(
    client: VastClient,
    home: Path,
    h: VastHandle,
    ledger: Ledger,
    notify: Callable[[str], None],
) -> VastHandle:
    """Rent the best fitting offer not tried yet; the ledger hears of it first."""
    opts = VastOptions.model_validate(h.options)
    found = [o for o in client.search_offers(h.query) if int(o["id"]) not in h.tried]
    if not found:
        raise NoCapacityError(
            "no Vast offer fits this job right now",
            hint="`launch plan` shows which filter excludes the most offers; relax "
            "targets.vast (max_dph, min_reliability, min_cuda) or the GPU types",
        )
    _key_path, public = ensure_key(home)
    ticket = ledger.intent("instance", h.label, {"label": h.label})
    last: TargetError | None = None
    for offer in offers_mod.rank(found, opts)[:MAX_OFFERS_TRIED]:
        payload: dict[str, Any] = {
            "client_id": "me",
            "image": h.image,
            "disk": h.disk_gb,
            "label": h.label,
            "env": {},
            "price": offers_mod.bid_price(offer, opts),
            # Vast's ssh mode skips the ENTRYPOINT and runs this after its sshd; the key is
            # also attached through the API once the instance runs
            "onstart": f"mkdir -p /root/.ssh && echo {shlex.quote(public)} "
            ">> /root/.ssh/authorized_keys",
            "runtype": "ssh",
        }
        try:
            iid = client.create_instance(int(offer["id"]), payload)
        except TargetError as e:
            last = e
            # the service may have rented it before the answer was lost: never keep a twin
            destroy_labelled(client, h.label)
            notify(f"could not rent {offers_mod.describe(offer)}: {e.message}")
            continue
        ledger.created(ticket, native_id=str(iid))
        notify(f"rented {offers_mod.describe(offer)} as instance {iid}")
        dph = offers_mod.price(offer, opts)  # the instance's own figure replaces it later
        return h.model_copy(
            update={
                "instance_id": iid,
                "offer_id": int(offer["id"]),
                "dph_total": dph,
                "tried": [*h.tried, int(offer["id"])],
                # billed from the create on: Vast charges storage (and a running GPU) at once
                "attempts": [
                    *h.attempts,
                    Attempt(instance_id=iid, dph_total=dph, start=time.time()),
                ],
            }
        )
    assert last is not None
    raise last
