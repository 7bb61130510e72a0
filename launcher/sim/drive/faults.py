"""Injected failures: the next matching API requests answer with Drive's error shape."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from launcher.sim.drive.store import DriveError

# reasons Drive reports under the usageLimits domain (the rest are "global")
USAGE_LIMITS = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "dailyLimitExceeded",
        "sharingRateLimitExceeded",
        "storageQuotaExceeded",
        "quotaExceeded",
    }
)
_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "backendError": "Backend Error",
    "internalError": "Internal Error",
}


@dataclass
class _Rule:
    status: int
    reason: str
    message: str
    method: str | None
    path_contains: str
    count: int


@dataclass
class Faults:
    _rules: list[_Rule] = field(default_factory=list[_Rule])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        status: int,
        reason: str,
        *,
        method: str | None = None,
        path_contains: str = "",
        count: int = 1,
        message: str | None = None,
    ) -> None:
        """The next ``count`` API requests with this HTTP ``method`` (any when None) whose path
        and decoded query (``/drive/v2/files?q='x' in parents...``) contain ``path_contains``
        answer ``status`` with ``reason``."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError("a fault needs a 4xx/5xx status and a count of at least 1")
        text = message or _MESSAGES.get(reason, f"Injected failure: {reason}")
        rule = _Rule(status, reason, text, method.upper() if method else None, path_contains,
                     count)  # fmt: skip
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> DriveError | None:
        """The error this request answers with, if a rule matches (using one of its count)."""
        with self._lock:
            for rule in self._rules:
                if (rule.method in (None, method.upper())) and rule.path_contains in path:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                    domain = "usageLimits" if rule.reason in USAGE_LIMITS else "global"
                    return DriveError(rule.status, rule.reason, rule.message, domain=domain)
        return None
