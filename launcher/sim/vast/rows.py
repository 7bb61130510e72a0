"""An instance as a Vast API row (`vastai/data/instance.py` plus recorded rows, reference §2.3).

The `vastai` CLI crashes on a row without a numeric `start_date` or with `extra_env` as anything
but a list of `[key, value]` pairs, so both are always present.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.sim.vast.instances import Instance


def instance_row(inst: Instance, actual: str | None, msg: str | None) -> dict[str, Any]:
    o = inst.offer
    ssh_bind = (inst.ports.get("22/tcp") or [{}])[0]
    # ssh coordinates appear once the instance is past provisioning (actual_status not null)
    ssh_port = int(ssh_bind["HostPort"]) if ssh_bind.get("HostPort") and actual else None
    shown_ports = inst.ports if actual is not None else {}
    return {
        "id": inst.id,
        "machine_id": o["machine_id"],
        "host_id": o["host_id"],
        "bundle_id": o.get("bundle_id"),
        "actual_status": actual,
        "intended_status": inst.intended,
        "cur_state": inst.intended,
        "next_state": inst.intended,
        "status_msg": msg,
        "image_uuid": inst.image,
        "image_args": [],
        "image_runtype": inst.runtype,
        "label": inst.label,
        "num_gpus": o["num_gpus"],
        "gpu_name": o["gpu_name"],
        "gpu_ram": o["gpu_ram"],
        "gpu_totalram": o["gpu_total_ram"],
        "gpu_util": 0.0,
        "gpu_temp": 35.0,
        "cuda_max_good": o["cuda_max_good"],
        "driver_version": o["driver_version"],
        "compute_cap": o["compute_cap"],
        "cpu_name": o["cpu_name"],
        "cpu_cores": o["cpu_cores"],
        "cpu_cores_effective": o["cpu_cores_effective"],
        "cpu_util": 0.0,
        "cpu_ram": o["cpu_ram"],
        "disk_space": inst.disk,
        "disk_util": 0.0,
        "disk_usage": 0.0,
        "mem_usage": 0.0,
        "mem_limit": o["cpu_ram"] / 1000.0,
        "inet_up": o["inet_up"],
        "inet_down": o["inet_down"],
        "inet_up_cost": o["inet_up_cost"],
        "inet_down_cost": o["inet_down_cost"],
        "storage_cost": o["storage_cost"],
        "ssh_host": "127.0.0.1" if ssh_port else None,
        "ssh_port": ssh_port,
        "ssh_idx": "0",
        "public_ipaddr": "127.0.0.1",
        "local_ipaddrs": "127.0.0.1",
        "direct_port_start": -1,
        "direct_port_end": -1,
        "ports": shown_ports,
        "jupyter_token": None,
        "extra_env": [[k, v] for k, v in inst.env.items()],
        "onstart": inst.onstart,
        "uptime_mins": round((time.time() - inst.start_date) / 60.0, 2),
        "start_date": inst.start_date,
        "end_date": None,
        "reliability2": o["reliability"],
        "dph_base": inst.bid if inst.bid is not None else o["dph_base"],
        "dph_total": inst.dph_total,
        "min_bid": o["min_bid"],
        "is_bid": inst.bid is not None,
        "verification": o["verification"],
        "geolocation": o["geolocation"],
        "template_id": None,
        "template_hash_id": None,
        "template_name": None,
        "volume_info": None,
        "client_run_time": 0.0,
        "host_run_time": 0.0,
    }
