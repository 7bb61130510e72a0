"""Instances: create from an offer, a lifecycle on a clock, rows shaped like Vast's, and knobs.

`actual_status` goes null -> loading -> running (each step after a configurable delay, and
`running` only once the machine really runs); `stopped` after a stop; `exited` when the machine's
main process ended; a pre-empted instance shows `stopped` (or `exited`) while `intended_status`
stays `running`, which is how the launcher tells pre-emption from a stop it asked for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.sim.vast.catalog import HOURS_PER_MONTH, search
from launcher.sim.vast.machines import (
    BootRequest,
    MachineError,
    Machines,
    MachineState,
)
from launcher.sim.vast.query import as_dict, as_list
from launcher.sim.vast.rows import instance_row

FIRST_INSTANCE_ID = 31_000_001
ONSTART_LIMIT = 4048  # Vast's OpenAPI "Key quirks" (reference §2.3)


class ApiError(Exception):
    """An error answer: HTTP status plus Vast's `{"success": false, "error", "msg"}` body."""

    def __init__(self, status: int, error: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.body = {"success": False, "error": error, "msg": msg}


@dataclass
class Instance:
    id: int
    offer: dict[str, Any]
    image: str
    env: dict[str, str]
    onstart: str | None
    label: str | None
    disk: float
    runtype: str
    bid: float | None
    dph_total: float
    start_date: float = field(default_factory=time.time)
    phase_start: float = field(default_factory=time.monotonic)
    intended: str = "running"
    handle: str | None = None
    boot_error: str | None = None
    booted: threading.Event = field(default_factory=threading.Event)
    preempted: str | None = None  # the actual_status shown while pre-empted
    exit_early: bool = False  # exit() came before the machine booted: it dies once it does
    destroyed: bool = False
    ssh_keys: list[str] = field(default_factory=list[str])
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict[str, list[dict[str, str]]])
    lock: threading.RLock = field(default_factory=threading.RLock)


def _extra_ports(env: Mapping[str, str]) -> list[str]:
    """`-p 8080:8080` / `-p 8081:8081/udp` option keys (the CLI's parse_env) -> docker ports."""
    out: list[str] = []
    for key in env:
        if key.startswith("-p "):
            spec = key[3:].strip().split(":")[-1]
            out.append(spec if "/" in spec else f"{spec}/tcp")
    return out


class InstanceBook:
    """Every instance of one emulator, with the offers they rent. Thread-safe."""

    def __init__(
        self,
        offers: list[dict[str, Any]],
        machines: Machines,
        *,
        loading_delay: float,
        running_delay: float,
        state_dir: Path | None = None,
    ) -> None:
        self.offers = offers
        self.machines = machines
        self.loading_delay = loading_delay
        self.running_delay = running_delay
        self.state_dir = state_dir
        self._lock = threading.RLock()
        self._instances: dict[int, Instance] = {}
        self._next_id = FIRST_INSTANCE_ID
        self._fail_creates: list[tuple[str, int, str]] = []  # (mode, status, msg)

    def search(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`POST /bundles/` over the offers, with a consistent view of what is rented."""
        with self._lock:
            return search(self.offers, body)

    # ---- create / destroy -------------------------------------------------------------------

    def fail_next_create(self, mode: str = "error", status: int = 400, msg: str = "") -> None:
        """mode "error": refuse it; "lost": create the instance but answer `status` (5xx),
        as when the response is lost after the service acted (the duplicate-instance trap)."""
        if mode not in ("error", "lost"):
            raise ValueError(f"unknown create failure mode {mode!r}")
        with self._lock:
            self._fail_creates.append((mode, status, msg))

    def create(self, offer_id: int, body: Mapping[str, Any]) -> int:
        with self._lock:
            failure = self._fail_creates.pop(0) if self._fail_creates else None
            if failure and failure[0] == "error":
                raise ApiError(
                    failure[1], "create_failed", failure[2] or "injected create failure"
                )
            offer = next((o for o in self.offers if int(o["id"]) == offer_id), None)
            if offer is None:
                raise ApiError(404, "no_such_ask", f"Instance type {offer_id} not found")
            if offer.get("rented") or not offer.get("rentable", True):
                raise ApiError(410, "no_such_ask", f"Offer {offer_id} is no longer available")
            image = body.get("image")
            if not image or not isinstance(image, str):
                raise ApiError(400, "invalid_args", "an image is required")
            disk = float(body.get("disk") or 10)
            if disk > float(offer["disk_space"]):
                raise ApiError(
                    400,
                    "invalid_args",
                    f"disk {disk} GB exceeds the offer's {offer['disk_space']}",
                )
            onstart = body.get("onstart") or None
            if onstart is not None and len(str(onstart)) > ONSTART_LIMIT:
                raise ApiError(
                    400,
                    "invalid_args",
                    f"onstart is limited to {ONSTART_LIMIT} characters (gzip+base64 a bigger one)",
                )
            bid = body.get("price")
            bid = None if bid is None else float(bid)
            if bid is not None and bid < float(offer["min_bid"]):
                raise ApiError(
                    400, "invalid_args", f"bid ${bid}/h is below min_bid ${offer['min_bid']}/h"
                )
            env = {k: str(v) for k, v in as_dict(body.get("env")).items()}
            storage_dph = float(offer["storage_cost"]) * disk / HOURS_PER_MONTH
            compute = bid if bid is not None else float(offer["dph_base"])
            iid = self._next_id
            self._next_id += 1
            inst = Instance(
                id=iid,
                offer=dict(offer),
                image=image,
                env=env,
                onstart=None if onstart is None else str(onstart),
                label=body.get("label") or None,
                disk=disk,
                runtype=str(body.get("runtype") or "ssh"),
                bid=bid,
                dph_total=round(compute + storage_dph, 6),
            )
            offer["rented"], offer["rentable"] = True, False
            self._instances[iid] = inst
            self._save()
        args = body.get("args")
        threading.Thread(target=self._boot, args=(inst, args), daemon=True).start()
        if failure and failure[0] == "lost":
            raise ApiError(failure[1], "server_error", failure[2] or "injected: response lost")
        return iid

    def _boot(self, inst: Instance, args: Any) -> None:
        container_env = {k: v for k, v in inst.env.items() if not k.startswith("-")}
        container_env.update(
            CONTAINER_ID=str(inst.id),
            VAST_CONTAINERLABEL=f"C.{inst.id}",
            PUBLIC_IPADDR="127.0.0.1",
        )
        ssh = inst.runtype != "args"
        req = BootRequest(
            instance_id=inst.id,
            image=inst.image,
            env=container_env,
            onstart=inst.onstart,
            label=inst.label,
            extra_ports=_extra_ports(inst.env),
            ssh=ssh,
            args=[str(a) for a in as_list(args)] if isinstance(args, list) else None,
        )
        try:
            handle = self.machines.boot(req)
        except MachineError as e:
            inst.boot_error = str(e)
            inst.booted.set()
            return
        with inst.lock:
            inst.handle = handle
            if inst.destroyed:
                self.machines.remove(handle)
                inst.booted.set()
                return
            if inst.exit_early:
                self.machines.kill(handle)
            try:
                inst.ports = self.machines.ports(handle)
                if ssh:
                    for key in inst.ssh_keys:
                        self.machines.add_key(handle, key)
            except MachineError as e:
                inst.boot_error = str(e)
        inst.booted.set()

    def destroy(self, iid: int) -> None:
        inst = self._require(iid)
        with self._lock:
            self._instances.pop(iid, None)
            for offer in self.offers:
                if offer["id"] == inst.offer["id"]:
                    offer["rented"], offer["rentable"] = False, True
            self._save()
        with inst.lock:
            inst.destroyed = True
            if inst.handle:
                self.machines.remove(inst.handle)

    def close(self) -> None:
        with self._lock:
            left = list(self._instances.values())
            self._instances.clear()
        for inst in left:
            with inst.lock:
                inst.destroyed = True
        for inst in left:  # a boot still under way would create its machine after remove_all
            inst.booted.wait(60)
        self.machines.remove_all()

    # ---- reads ------------------------------------------------------------------------------

    def _require(self, iid: int) -> Instance:
        with self._lock:
            inst = self._instances.get(iid)
        if inst is None:
            raise ApiError(404, "no_such_instance", f"Instance {iid} not found")
        return inst

    def get(self, iid: int) -> Instance | None:
        with self._lock:
            return self._instances.get(iid)

    def all(self) -> list[Instance]:
        with self._lock:
            return list(self._instances.values())

    def status(self, inst: Instance) -> tuple[str | None, str | None]:
        """(actual_status, status_msg) now."""
        if inst.boot_error:
            return "exited", f"Error: {inst.boot_error}"
        if inst.exit_early:
            return "exited", "the instance's main process exited"
        if inst.intended == "stopped":
            return "stopped", "Instance stopped by user"
        if inst.preempted:
            return inst.preempted, "Outbid: paused until this bid is the highest (interruptible)"
        age = time.monotonic() - inst.phase_start
        if age < self.loading_delay:
            return None, None
        if age < self.loading_delay + self.running_delay or not inst.booted.is_set():
            return "loading", f"Pulling image {inst.image} / starting container"
        ms = self.machines.state(inst.handle) if inst.handle else MachineState("gone")
        match ms.status:
            case "running":
                return "running", f"success, running {inst.image}"
            case "paused":
                return "stopped", "container paused"
            case "created" | "restarting":
                return "loading", "starting container"
            case "gone":
                return "offline", "the host lost the container"
            case _:
                return "exited", f"container exited with code {ms.exit_code}"

    def row(self, inst: Instance) -> dict[str, Any]:
        """The instance as `show instance` returns it."""
        actual, msg = self.status(inst)
        return instance_row(inst, actual, msg)

    # ---- changes ----------------------------------------------------------------------------

    def _machine(self, inst: Instance) -> str:
        """The machine's handle, once booted. NOTE: never call this holding `inst.lock`:
        `_boot` takes that lock to record the handle, so waiting under it deadlocks."""
        if not inst.booted.wait(120) or inst.handle is None:
            raise ApiError(409, "not_ready", inst.boot_error or "instance has no machine yet")
        return inst.handle

    def set_state(self, iid: int, state: str) -> None:
        inst = self._require(iid)
        if state not in ("running", "stopped"):
            raise ApiError(400, "invalid_args", f"unknown state {state!r}")
        handle = self._machine(inst)
        with inst.lock:
            if state == "stopped":
                inst.intended = "stopped"
                self.machines.stop(handle)
            elif inst.preempted:
                inst.intended = "running"  # outbid: it waits until its bid is the highest again
            elif inst.intended != "running":
                self._restart(inst, handle)

    def reboot(self, iid: int) -> None:
        """Stop and start the machine (disk kept): loading -> running again."""
        inst = self._require(iid)
        handle = self._machine(inst)
        with inst.lock:
            self.machines.stop(handle)
            self._restart(inst, handle)

    def _restart(self, inst: Instance, handle: str) -> None:
        self.machines.start(handle)
        inst.intended, inst.preempted = "running", None
        inst.phase_start = time.monotonic()
        inst.ports = self.machines.ports(handle)  # docker assigns new host ports on start
        for key in inst.ssh_keys if inst.runtype != "args" else []:
            self.machines.add_key(handle, key)

    def set_label(self, iid: int, label: str | None) -> None:
        self._require(iid).label = label or None

    def set_bid(self, iid: int, price: float) -> None:
        inst = self._require(iid)
        if not price >= float(inst.offer["min_bid"]):  # NaN (no price) fails too
            raise ApiError(400, "invalid_args", f"bid ${price}/h is below min_bid")
        storage_dph = float(inst.offer["storage_cost"]) * inst.disk / HOURS_PER_MONTH
        handle = self._machine(inst) if inst.preempted is not None else None
        with inst.lock:
            outbid = handle is not None and price > (inst.bid or 0.0)
            inst.bid, inst.dph_total = price, round(price + storage_dph, 6)
            if outbid and handle is not None:  # a higher bid wins the machine back
                self._restart(inst, handle)

    def attach_key(self, iid: int, key: str) -> None:
        inst = self._require(iid)
        key = key.strip()
        if not key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ApiError(400, "invalid_args", "ssh_key does not look like an OpenSSH public key")
        with inst.lock:
            if key not in inst.ssh_keys:
                inst.ssh_keys.append(key)
            if inst.handle and self.machines.state(inst.handle).status == "running":
                self.machines.add_key(inst.handle, key)

    def logs(self, iid: int, tail: int) -> str:
        inst = self._require(iid)
        return self.machines.logs(inst.handle, tail) if inst.handle else ""

    # ---- failure knobs ----------------------------------------------------------------------

    def preempt(self, iid: int, *, status: str = "stopped", pause: bool = False) -> None:
        """Outbid: the machine is paused/stopped; intended stays running."""
        inst = self._require(iid)
        handle = self._machine(inst)
        with inst.lock:
            inst.preempted = status
            if pause:
                self.machines.pause(handle)
            else:
                self.machines.stop(handle)

    def resume(self, iid: int) -> None:
        """The higher bidder left: the instance starts again (loading -> running)."""
        inst = self._require(iid)
        handle = self._machine(inst)
        with inst.lock:
            self._restart(inst, handle)

    def exit(self, iid: int) -> None:
        """The machine's main process dies: actual_status becomes exited. Before the machine
        has booted, it is marked and killed as soon as it boots (the call never waits)."""
        inst = self._require(iid)
        with inst.lock:
            if inst.handle is None and not inst.booted.is_set():
                inst.exit_early = True
                return
        self.machines.kill(self._machine(inst))

    def drop_ssh(self, iid: int) -> None:
        """Kill every sshd in the machine (listener and sessions); the job keeps running."""
        inst = self._require(iid)
        self.machines.drop_ssh(self._machine(inst))

    def restore_ssh(self, iid: int) -> None:
        inst = self._require(iid)
        self.machines.restore_ssh(self._machine(inst))

    # ---- persistence ------------------------------------------------------------------------

    def _save(self) -> None:
        """A snapshot for people and tests to read (state lives in memory)."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        snap = {
            "instances": [
                {"id": i.id, "offer_id": i.offer["id"], "image": i.image, "label": i.label}
                for i in self._instances.values()
            ],
            "rented_offers": [o["id"] for o in self.offers if o.get("rented")],
        }
        tmp = self.state_dir / "vast-state.json.tmp"
        tmp.write_text(json.dumps(snap, indent=1))
        tmp.replace(self.state_dir / "vast-state.json")
