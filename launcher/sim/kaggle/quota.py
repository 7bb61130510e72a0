"""Weekly accelerator quota, per user, as `GetAcceleratorQuotaStatistics` reports it.

Kaggle counts the time a GPU (or TPU) session runs against a weekly allowance (about 30 h GPU and
20 h TPU; reference §1.6). Time used includes the sessions still running, so a client polling the
quota sees it grow. The week ends on Saturday 00:00 UTC [unverified: Kaggle's UI says "resets
weekly"; the exact instant is not in the client].
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

GPU = "gpu"
TPU = "tpu"

# TPU shapes start with "Tpu" (TpuV5E8, TpuV38; reference §1.3); any other shape is a GPU
TPU_PREFIX = "tpu"


def accelerator_of(enable_gpu: bool, enable_tpu: bool, machine_shape: str | None) -> str | None:
    """The quota a session draws on: "gpu", "tpu" or None (CPU)."""
    shape = (machine_shape or "").strip().lower()
    if shape:
        if shape.startswith(TPU_PREFIX):
            return TPU
        if shape in ("none", "cpu"):
            return None
        return GPU
    if enable_tpu:
        return TPU
    if enable_gpu:
        return GPU
    return None


def _duration(seconds: float) -> str:
    return f"{max(0.0, seconds):.3f}s"


def next_refresh(now: datetime) -> datetime:
    days = (5 - now.weekday()) % 7 or 7  # Saturday is weekday 5
    day = (now + timedelta(days=days)).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class QuotaBook:
    """Seconds allowed and used per (user, accelerator); running sessions report live time."""

    def __init__(self, gpu_seconds: float, tpu_seconds: float) -> None:
        self._allowed = {GPU: float(gpu_seconds), TPU: float(tpu_seconds)}
        self._used: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        # live time of running sessions: (user, accelerator) -> seconds; set by the kernel store
        self.running: Callable[[str, str], float] = lambda _user, _acc: 0.0

    def set_allowed(self, accelerator: str, seconds: float) -> None:
        with self._lock:
            self._allowed[accelerator] = float(seconds)

    def set_used(self, user: str, accelerator: str, seconds: float) -> None:
        with self._lock:
            self._used[(user, accelerator)] = float(seconds)

    def charge(self, user: str, accelerator: str, seconds: float) -> None:
        with self._lock:
            key = (user, accelerator)
            self._used[key] = self._used.get(key, 0.0) + max(0.0, seconds)

    def used(self, user: str, accelerator: str) -> float:
        with self._lock:
            done = self._used.get((user, accelerator), 0.0)
        return done + self.running(user, accelerator)

    def allowed(self, accelerator: str) -> float:
        with self._lock:
            return self._allowed[accelerator]

    def remaining(self, user: str, accelerator: str) -> float:
        return self.allowed(accelerator) - self.used(user, accelerator)

    def statistics(self, user: str) -> dict[str, Any]:
        def one(acc: str) -> dict[str, Any]:
            used = self.used(user, acc)
            return {
                "timeUsed": _duration(used),
                "totalTimeAllowed": _duration(self.allowed(acc)),
                "hasEverRun": used > 0,
            }

        now = datetime.fromtimestamp(time.time(), UTC)
        refresh = next_refresh(now).replace(tzinfo=None)
        return {
            "quotaRefreshTime": refresh.isoformat(timespec="milliseconds") + "Z",
            "gpuQuota": one(GPU),
            "tpuQuota": one(TPU),
        }
