"""A thin, typed client of the Vast.ai REST API (reference/platforms.md §2), on the stdlib.

NOTE: we do not import the `vastai` package (nor `vastai_sdk`), on purpose. `vastai` 1.9.1 pins
cryptography==49, which breaks pydrive2 (the Colab target) in the same environment, and we need
six endpoints of it. The emulator tests prove this client and the real `vastai` CLI speak the
same wire protocol (tests/sim/test_vast_*).

This is the one module of the Vast target that talks HTTP, and the one place where transport
and API errors become `launcher.errors` (docker-py's `create_api_error_from_http_exception`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from launcher import settings
from launcher.endpoints import nothing_listens, unreachable
from launcher.errors import (
    LaunchError,
    NoCapacityError,
    SubmitError,
    TargetError,
    TargetUnavailableError,
)

DEFAULT_URL = "https://console.vast.ai"
KEY_FILE = Path("~/.config/vastai/vast_api_key")
USER_AGENT = "launch-vast/0.1"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def api_url() -> str:
    return settings.url("LAUNCH_VAST_URL") or DEFAULT_URL


def api_key() -> str:
    """The key from `VAST_API_KEY`, else the `vastai` CLI's key file."""
    key = os.environ.get("VAST_API_KEY", "").strip()
    if key:
        return key
    path = KEY_FILE.expanduser()
    try:
        key = path.read_text().strip()
    except OSError:
        key = ""
    if not key:
        raise TargetUnavailableError(
            f"no Vast.ai API key: VAST_API_KEY is not set and {path} does not exist",
            hint="create a key at https://cloud.vast.ai/manage-keys/ and export VAST_API_KEY "
            f"(or save it in {path})",
        )
    return key


class VastInstance(BaseModel):
    """An instance row (`GET /instances/{id}/`, `GET /api/v1/instances/`), the fields we read.

    actual_status: None while created, then "loading" | "running" | "stopped" | "exited" |
    "unknown" | "offline" | "frozen" | "rebooting"; intended_status: what the owner asked for.
    """

    model_config = ConfigDict(extra="ignore")

    id: int
    label: str | None = None
    actual_status: str | None = None
    intended_status: str | None = None
    status_msg: str | None = None
    dph_total: float | None = None
    is_bid: bool = False
    public_ipaddr: str | None = None
    ports: dict[str, list[dict[str, Any]] | None] = Field(default_factory=dict)
    ssh_host: str | None = None
    ssh_port: int | None = None

    def ssh_address(self) -> tuple[str, int] | None:
        """Direct (public ip + mapped 22/tcp) when the host offers it, else Vast's ssh proxy."""
        bind = self.ports.get("22/tcp") or []
        port = bind[0].get("HostPort") if bind else None
        if port and self.public_ipaddr:
            return self.public_ipaddr.strip(), int(port)
        if self.ssh_host and self.ssh_port:
            return self.ssh_host, self.ssh_port
        return None


def _instance(row: dict[str, Any]) -> VastInstance | None:
    try:
        return VastInstance.model_validate(row)
    except ValidationError:
        return None


class VastApiError(TargetError):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Vast API error {status}: {message}")
        self.status = status


class VastClient:
    """Six endpoints of the Vast API, with bounded retries on 429/5xx and connection errors.

    `Retry-After` is honoured (capped by `max_wait`); each request is tried `retries + 1` times.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        retries: int = 4,
        timeout: float = 30.0,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = (url or api_url()).rstrip("/")
        self.key = key if key is not None else api_key()
        self.retries = retries
        self.timeout = timeout
        self.max_wait = max_wait
        self._sleep = sleep

    # ---- transport --------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        *,
        retry_on: frozenset[int] = _RETRY_STATUS,
        retry_transport: bool = True,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + "&".join(
                f"{k}={urllib.parse.quote_plus(v if isinstance(v, str) else json.dumps(v))}"
                for k, v in query.items()
            )
        headers = {
            "User-Agent": USER_AGENT,
            "Authorization": f"Bearer {self.key}",
            "Accept": "application/json",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"  # exactly; the service checks it
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    raw = r.read()
                return json.loads(raw) if raw.strip() else {}
            except urllib.error.HTTPError as e:
                status, text = e.code, _error_text(e)
                if status not in retry_on or attempt >= self.retries:
                    raise _translate(status, text, method, path) from e
                wait = _retry_after(e.headers, attempt, self.max_wait)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                if not retry_transport or attempt >= self.retries or nothing_listens(url, e):
                    api = "the Vast API"
                    raise unreachable(api, self.url, "LAUNCH_VAST_URL", "vast", e) from e
                wait = min(self.max_wait, 0.5 * 2**attempt)
            except ValueError as e:
                raise TargetError(f"the Vast API sent something that is not JSON: {e}") from e
            attempt += 1
            self._sleep(wait)

    # ---- endpoints --------------------------------------------------------------------------

    def search_offers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`POST /bundles/`: offers matching `query` (the JSON `vastai search offers` sends)."""
        res = _as_dict(self._request("POST", "/api/v0/bundles/", dict(query)))
        return _dicts(res.get("offers"))

    def create_instance(self, offer_id: int, payload: Mapping[str, Any]) -> int:
        """`PUT /asks/{id}/`: rent an offer. Returns the instance id (`new_contract`)."""
        try:
            # Not idempotent: after a 5xx or a dropped connection the service may have rented
            # it anyway, so only a 429 (refused before acting) is retried here. The caller
            # looks the instance up by its label before it tries again.
            res = _as_dict(
                self._request(
                    "PUT",
                    f"/api/v0/asks/{offer_id}/",
                    dict(payload),
                    retry_on=frozenset({429}),
                    retry_transport=False,
                )
            )
        except VastApiError as e:
            if e.status in (404, 410):
                raise NoCapacityError(f"offer {offer_id} is no longer available") from e
            raise SubmitError(e.message) from e
        except TargetUnavailableError:
            raise
        except TargetError as e:
            raise SubmitError(e.message) from e
        iid = res.get("new_contract")
        if not res.get("success") or not isinstance(iid, int):
            raise SubmitError(f"Vast did not create an instance: {res.get('msg') or res}")
        return iid

    def show_instance(self, iid: int) -> VastInstance | None:
        """`GET /instances/{id}/`: the instance's row, or None when it no longer exists."""
        try:
            res = _as_dict(
                self._request("GET", f"/api/v0/instances/{iid}/", query={"owner": "me"})
            )
        except VastApiError as e:
            if e.status == 404:
                return None
            raise
        row = res.get("instances")
        return _instance(cast("dict[str, Any]", row)) if _is_dict(row) else None

    def destroy_instance(self, iid: int) -> None:
        """`DELETE /instances/{id}/`; silent when it is already gone."""
        try:
            self._request("DELETE", f"/api/v0/instances/{iid}/", {})
        except VastApiError as e:
            if e.status != 404:
                raise

    def attach_ssh_key(self, iid: int, public_key: str) -> None:
        """`POST /instances/{id}/ssh/`: let this key log in as root."""
        self._request("POST", f"/api/v0/instances/{iid}/ssh/", {"ssh_key": public_key})

    def list_instances(self) -> list[VastInstance]:
        """`GET /api/v1/instances/`, every page."""
        rows: list[VastInstance] = []
        token: str | None = None
        for _ in range(1000):
            query: dict[str, Any] = {
                "select_filters": {},
                "order_by": [{"col": "id", "dir": "asc"}],
                "limit": 100,
            }
            if token:
                query["after_token"] = token
            res = _as_dict(self._request("GET", "/api/v1/instances/", query=query))
            rows += [i for r in _dicts(res.get("instances")) if (i := _instance(r))]
            nxt = res.get("next_token")
            if not nxt:
                break
            token = str(nxt)
        return rows

    def instances_labelled(self, label: str) -> list[VastInstance]:
        return [r for r in self.list_instances() if r.label == label]


# ---- helpers ----------------------------------------------------------------------------------


def _is_dict(v: object) -> bool:
    return isinstance(v, dict)


def _as_dict(v: object) -> dict[str, Any]:
    return cast("dict[str, Any]", v) if isinstance(v, dict) else {}


def _dicts(v: object) -> list[dict[str, Any]]:
    return [cast("dict[str, Any]", x) for x in _as_list(v) if isinstance(x, dict)]


def _as_list(v: object) -> list[object]:
    return cast("list[object]", v) if isinstance(v, list) else []


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read()
    except OSError:
        return str(e.reason)
    try:
        body = _as_dict(json.loads(raw))
    except ValueError:
        return raw.decode("utf-8", "replace")[:300] or str(e.reason)
    return str(body.get("msg") or body.get("error") or body)[:300]


def _retry_after(headers: Message | None, attempt: int, cap: float) -> float:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        wait = float(value) if value is not None else 0.5 * 2**attempt
    except ValueError:  # an HTTP date: not worth parsing, back off instead
        wait = 0.5 * 2**attempt
    return max(0.0, min(cap, wait))


def _translate(status: int, text: str, method: str, path: str) -> LaunchError:
    if status in (401, 403):
        return TargetUnavailableError(
            f"Vast refused the API key ({status}: {text})",
            hint="check VAST_API_KEY (keys: https://cloud.vast.ai/manage-keys/)",
        )
    return VastApiError(status, f"{method} {path}: {text}")
