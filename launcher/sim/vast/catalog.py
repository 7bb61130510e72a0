"""Offers: a catalog of realistic machines and prices, and the `POST /bundles/` search over it.

Prices follow public Vast.ai figures (reference/platforms.md §5). An offer is one whole machine
here; renting it makes it unrentable until the instance is destroyed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.sim.vast.query import (
    QueryError,
    as_dict,
    as_list,
    compile_filters,
    order_rows,
    parse_order,
)

# Vast bills storage per GB-month; dph_total is per hour (NOTE: dph_base is only one of the
# price components, as dstack says).
HOURS_PER_MONTH = 720.0
DEFAULT_ALLOCATED_STORAGE = 5.0

# One machine per line. cuda = cuda_max_good; ram/vram in MB; disk GB; down/up Mb/s; dph = the
# on-demand $/h (dph_base); bid = min_bid; ver = verified.
_MACHINES = """
gpu_name   n vram  cc  cuda cores ram    disk down up   dph  bid  rel   ver geolocation
RTX_4090   1 24564 890 12.4 16    64000  200  850  600  0.35 0.18 0.995 1   Sweden,_SE
RTX_4090   1 24564 890 12.2 12    32000  120  450  300  0.28 0.15 0.981 1   Texas,_US
RTX_4090   1 24564 890 12.8 32    128000 500  2000 1500 0.52 0.25 0.999 1   Oregon,_US
RTX_4090   2 24564 890 12.4 32    128000 800  900  800  0.70 0.36 0.990 1   Quebec,_CA
RTX_4090   1 24564 890 12.1 8     32000  80   120  40   0.22 0.11 0.950 0   Vietnam,_VN
RTX_3090   1 24576 860 12.2 8     32000  150  500  400  0.16 0.08 0.992 1   Poland,_PL
RTX_3090   4 24576 860 12.0 32    128000 1000 900  900  0.62 0.32 0.985 1   Ohio,_US
RTX_A6000  1 49140 860 12.4 16    64000  300  1000 900  0.47 0.25 0.997 1   Norway,_NO
A100_SXM4  1 81920 800 12.4 32    257000 1000 3000 2500 1.10 0.55 0.998 1   Virginia,_US
A100_PCIE  1 40960 800 12.2 16    128000 500  1500 1200 0.72 0.40 0.990 1   Germany,_DE
H100_SXM   1 81559 900 12.8 26    225000 1500 5000 5000 2.35 1.20 0.999 1   Finland,_FI
H100_PCIE  2 81559 900 12.6 48    400000 2000 4000 3500 3.90 2.00 0.996 1   Iceland,_IS
Tesla_T4   1 15360 750 12.2 4     16000  60   300  100  0.11 0.05 0.970 1   France,_FR
RTX_3060   1 12288 860 12.0 6     16000  40   90   20   0.06 0.03 0.930 0   Brazil,_BR
RTX_4090   1 24564 890 13.0 24    96000  300  1200 900  0.40 0.20 0.993 1   Netherlands,_NL
L4         1 23034 890 13.0 12    64000  250  1000 800  0.33 0.16 0.991 1   Belgium,_BE
RTX_5090   1 32607 1200 13.0 32   128000 400  1500 1200 0.69 0.34 0.996 1   California,_US
"""
# per-GPU deep-learning perf score and TFLOPS, roughly as Vast reports them
_PERF = {
    "RTX 4090": (30.0, 82.6), "RTX 3090": (17.3, 35.6), "RTX A6000": (22.0, 38.7),
    "A100 SXM4": (45.3, 78.0), "A100 PCIE": (38.0, 78.0), "H100 SXM": (98.0, 267.0),
    "H100 PCIE": (80.0, 204.0), "Tesla T4": (6.1, 8.1), "RTX 3060": (7.0, 12.7),
    "L4": (12.0, 30.3), "RTX 5090": (41.0, 104.8),
}  # fmt: skip


def _machines() -> list[tuple[Any, ...]]:
    lines = [ln.split() for ln in _MACHINES.strip().splitlines()[1:]]
    out: list[tuple[Any, ...]] = []
    for gpu, n, vram, cc, cuda, cores, ram, disk, down, up, dph, bid, rel, ver, geo in lines:
        name = gpu.replace("_", " ")
        dlp, tf = _PERF[name]
        out.append((
            name, int(n), int(vram), int(cc), float(cuda), int(cores), int(ram), float(disk),
            float(down), float(up), float(dph), float(bid), float(rel), ver == "1",
            geo.replace("_", " "), dlp, tf,
        ))  # fmt: skip
    return out


def default_catalog() -> list[dict[str, Any]]:
    """The built-in offers, ids from 4_000_001 (machine ids from 10_001)."""
    offers: list[dict[str, Any]] = []
    for i, m in enumerate(_machines()):
        (gpu, n, vram, cc, cuda, cores, ram, disk, down, up, dph, bid, rel, ver, geo, dlp, tf) = m
        offers.append(
            {
                "id": 4_000_001 + i,
                "ask_contract_id": 4_000_001 + i,
                "bundle_id": 90_000_001 + i,
                "machine_id": 10_001 + i,
                "host_id": 500 + i,
                "hostname": f"sim-host-{i + 1}",
                "gpu_name": gpu,
                "num_gpus": n,
                "gpu_ram": vram,
                "gpu_total_ram": vram * n,
                "gpu_frac": 1.0,
                "gpu_arch": "nvidia",
                "gpu_max_power": 450.0 if "4090" in gpu else 350.0,
                "gpu_mem_bw": 1000.0,
                "gpu_display_active": False,
                "compute_cap": cc,
                "cuda_max_good": cuda,
                # CUDA 13 needs a 580 driver; 12.6-12.8 shipped with 560
                "driver_version": "580.95.05"
                if cuda >= 13
                else ("560.35.03" if cuda >= 12.6 else "550.54.15"),
                "driver_vers": 580095005
                if cuda >= 13
                else (560035003 if cuda >= 12.6 else 550054015),
                "bw_nvlink": 0.0,
                "cpu_name": "AMD EPYC 7B13" if cores >= 26 else "AMD Ryzen 9 7950X",
                "cpu_arch": "amd64",
                "cpu_cores": cores,
                "cpu_cores_effective": float(cores),
                "cpu_ghz": 3.5,
                "cpu_ram": ram,
                "disk_space": disk,
                "disk_bw": 2500.0,
                "disk_name": "nvme",
                "inet_down": down,
                "inet_up": up,
                "inet_down_cost": 0.002,
                "inet_up_cost": 0.003,
                "direct_port_count": 100,
                "pci_gen": 4.0,
                "pcie_bw": 24.5,
                "dph_base": dph,
                "min_bid": bid,
                "storage_cost": 0.15,
                "dlperf": dlp * n,
                "total_flops": tf * n,
                "reliability": rel,
                "reliability2": rel,
                "verification": "verified" if ver else "unverified",
                "verified": ver,
                "external": False,
                "rentable": True,
                "rented": False,
                "is_bid": False,
                "static_ip": True,
                "vms_enabled": False,
                "geolocation": geo,
                "public_ipaddr": "127.0.0.1",
                "duration": 30 * 86400.0,
                "end_date": None,
                "cluster_id": None,
                "platform_fee": 0.0,
                "hosting_type": 0,
                "os_version": "22.04",
                "mobo_name": "sim",
            }
        )
    return offers


def load_catalog(path: Path) -> list[dict[str, Any]]:
    """Offers from a JSON file: a list of partial offers laid over the default fields."""
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, list):
        raise ValueError(f"{path}: expected a JSON list of offers")
    items = as_list(loaded)
    base = default_catalog()[0]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: offer {i} is not an object")
        offer: dict[str, Any] = {
            **base,
            "id": 4_000_001 + i,
            "machine_id": 10_001 + i,
            **as_dict(item),
        }
        offer.setdefault("ask_contract_id", offer["id"])
        out.append(offer)
    return out


def priced(offer: Mapping[str, Any], *, allocated_storage: float, bid: bool) -> dict[str, Any]:
    """A copy of `offer` with the price fields the search computes for one request."""
    row = copy.deepcopy(dict(offer))
    storage_dph = float(row["storage_cost"]) * allocated_storage / HOURS_PER_MONTH
    # interruptible searches price at the bid floor; on-demand at the host's asking price
    compute = float(row["min_bid"] if bid else row["dph_base"])
    total = round(compute + storage_dph, 6)
    row["dph_total"] = total
    row["is_bid"] = bid
    row["storage_total_cost"] = round(storage_dph, 6)
    row["dlperf_per_dphtotal"] = round(float(row["dlperf"]) / total, 4) if total else 0.0
    row["flops_per_dphtotal"] = round(float(row["total_flops"]) / total, 4) if total else 0.0
    # Vast's score is opaque; this one rewards performance per dollar and reliability
    row["score"] = round(row["dlperf_per_dphtotal"] * float(row["reliability"]) ** 4, 4)
    return row


def search(offers: list[dict[str, Any]], body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The offers that `body` (a `POST /api/v0/bundles/` request) selects, ordered and limited."""
    filters = {
        k: v for k, v in body.items() if k not in ("order", "type", "limit", "allocated_storage")
    }
    kind = str(body.get("type") or "on-demand")
    if kind not in ("on-demand", "bid", "interruptible", "reserved"):
        raise QueryError(f"unknown offer type {kind!r}")
    storage = float(body.get("allocated_storage") or DEFAULT_ALLOCATED_STORAGE)
    rows = [
        priced(o, allocated_storage=storage, bid=kind in ("bid", "interruptible")) for o in offers
    ]
    predicate = compile_filters(filters, rows, rows[0].keys() if rows else ())
    hits = [r for r in rows if predicate(r)]
    order = parse_order(body.get("order") if "order" in body else [["score", "desc"]])
    hits = order_rows(hits, order)
    limit = body.get("limit")
    if limit is not None:
        hits = hits[: max(0, int(limit))]
    return hits


def gpu_names(offers: list[dict[str, Any]]) -> list[str]:
    return sorted({str(o["gpu_name"]) for o in offers})
