"""The one module that talks to Kaggle: kagglesdk (the official client), imported lazily.

kagglesdk is used rather than the `kaggle` package: `import kaggle` authenticates at import time
(a network call with token auth; reference §1.2), while kagglesdk only builds requests. What the
official client does not do, this module adds:

- retries with backoff (honouring Retry-After) on 429, 5xx and connection errors for every call:
  kagglesdk retries nothing, and the CLI retries only uploads and dataset creation (§1.5). A call
  that is not safe to repeat (SaveKernel: each push starts a session) is retried only where
  Kaggle cannot have acted; otherwise rpc.py looks for what it made before trying again;
- a timeout on every request (requests' default is to wait forever);
- one error type: `TargetError` with Kaggle's own words, `raise ... from` the SDK's exception;
- the endpoint from `LAUNCH_KAGGLE_URL` (an emulator), by repointing kagglesdk's PROD endpoint,
  the override the reference found to work with the unchanged client (§1.1 method C).

The rest of the target calls the typed methods of rpc.py (`save_kernel`, `kernel_session`,
`dataset`...), mixed in here; Kaggle's RPC names and JSON shapes stay in these two modules.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from launcher import settings
from launcher.endpoints import nothing_listens, unreachable
from launcher.errors import TargetError, TargetUnavailableError
from launcher.progress import CountingReader
from launcher.targets.kaggle.rpc import (
    KaggleNotFoundError,
    KaggleRpc,
    KaggleUnsureError,
    KernelSession,
    LogEntry,
    log_entries,
    rows,
)

INSTALL_HINT = "pip install 'launch[kaggle]'"
CREDENTIALS_HINT = (
    "create an API token at https://www.kaggle.com/settings (API -> Create New Token) and save "
    "the kaggle.json it downloads as ~/.kaggle/kaggle.json (chmod 600); or export "
    "KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN"
)


RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Credentials:
    username: str
    key: str | None = None  # legacy API key (Basic auth)
    token: str | None = None  # API token (Bearer)
    source: str = ""


def _config_dir() -> Path:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.is_dir():
        return home
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "kaggle"


def _token() -> tuple[str, str] | None:
    """An API token, from where the kaggle CLI looks (kaggle_env.get_access_token_from_env)."""
    value = os.environ.get("KAGGLE_API_TOKEN", "").strip()
    if value:
        path = Path(value).expanduser()
        if path.is_file():
            return path.read_text().strip(), f"the file named by KAGGLE_API_TOKEN ({path})"
        return value, "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip(), str(path)
    return None


def find_credentials() -> Credentials:
    """Kaggle credentials, in the kaggle CLI's order; a clear error naming the fix if none.

    A token without KAGGLE_USERNAME gets its user name from IntrospectToken at first use.
    """
    token = _token()
    if token is not None:
        return Credentials(os.environ.get("KAGGLE_USERNAME", ""), token=token[0], source=token[1])
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return Credentials(user, key=key, source="KAGGLE_USERNAME/KAGGLE_KEY")
    path = _config_dir() / "kaggle.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return Credentials(str(data["username"]), key=str(data["key"]), source=str(path))
        except (ValueError, KeyError, TypeError) as e:
            raise TargetUnavailableError(
                f"{path} is not a kaggle.json (username and key)", hint=CREDENTIALS_HINT
            ) from e
    raise TargetUnavailableError("no Kaggle credentials found", hint=CREDENTIALS_HINT)


def api_url() -> str:
    return settings.url("LAUNCH_KAGGLE_URL") or "https://api.kaggle.com"


def sdk_installed() -> bool:
    try:
        importlib.import_module("kagglesdk")
    except ImportError:
        return False
    return True


def _sdk(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TargetUnavailableError(
            "the kaggle target needs kagglesdk, which is not installed", hint=INSTALL_HINT
        ) from e


# (module of the request type, client group, client attribute) per service
_SERVICES: dict[str, tuple[str, str, str]] = {
    "kernels": ("kagglesdk.kernels.types.kernels_api_service", "kernels", "kernels_api_client"),
    "datasets": ("kagglesdk.datasets.types.dataset_api_service", "datasets", "dataset_api_client"),
    "blobs": ("kagglesdk.blobs.types.blob_api_service", "blobs", "blob_api_client"),
    "security": ("kagglesdk.security.types.oauth_service", "security", "oauth_client"),
}


class KaggleClient(KaggleRpc):
    """Kaggle's API through kagglesdk, with retries. One per target; built on first use."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        url: str | None = None,
        *,
        attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.creds = credentials or find_credentials()
        self.url = (url or api_url()).rstrip("/")
        self.attempts = attempts or settings.count("LAUNCH_KAGGLE_ATTEMPTS", default=6)
        self._sleep = sleep
        self._notify = notify
        self._sdk: Any = None
        self._requests: Any = None

    # ---- plumbing ---------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._sdk is not None:
            return self._sdk
        env_mod = _sdk("kagglesdk.kaggle_env")
        client_mod = _sdk("kagglesdk")
        self._requests = _sdk("requests")
        # NOTE: the documented way to reach another endpoint with the unchanged client; it is
        # a module-level table, so every kagglesdk client of this process uses the same URL
        env_mod._env_to_endpoint[env_mod.KaggleEnv.PROD] = self.url
        c = self.creds
        sdk = client_mod.KaggleClient(
            env=env_mod.KaggleEnv.PROD,
            username=c.username if c.key else None,
            password=c.key,
            api_token=c.token,
        )
        http = sdk.http_client()
        http._init_session()  # to add a timeout to the session it made
        session = http._session
        adapters = _sdk("requests.adapters")

        class _TimeoutAdapter(adapters.HTTPAdapter):  # type: ignore[misc, name-defined]
            def send(self, request: Any, **kw: Any) -> Any:  # type: ignore[override]
                kw["timeout"] = kw.get("timeout") or TIMEOUT_S
                return super().send(request, **kw)  # type: ignore[no-any-return]

        for prefix in ("http://", "https://"):
            session.mount(prefix, _TimeoutAdapter())
        self._sdk = sdk
        return sdk

    def call_object(
        self, service: str, method: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> Any:
        """One RPC (`{service}.{Method}`) with retries; kagglesdk's response object."""
        sdk = self._client()
        module, group, attr = _SERVICES[service]
        types = _sdk(module)
        name = "".join(p[:1].upper() + p[1:] for p in method.split("_"))
        req_cls = getattr(types, f"Api{name}Request", None) or getattr(types, f"{name}Request")
        fn = getattr(getattr(getattr(sdk, group), attr), method)
        return self._retrying(
            f"{service}.{name}", lambda: fn(req_cls.from_dict(body)), idempotent=idempotent
        )

    def call(
        self, service: str, method: str, body: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """One RPC with retries; the response as a dict (see KaggleRpc.call for `idempotent`)."""
        resp = self.call_object(service, method, body, idempotent=idempotent)
        return cast("dict[str, Any]", resp.to_dict()) if resp is not None else {}

    def quota(self) -> dict[str, tuple[float, float]]:
        """Weekly accelerator quota in seconds: {"gpu": (used, allowed), "tpu": (...)}.

        Read from the response object: kagglesdk's to_dict() drops whole days from durations
        (TimeDeltaSerializer uses timedelta.seconds), which would turn 30 h into 6 h."""
        resp = self.call_object("kernels", "get_accelerator_quota_statistics", {})
        out: dict[str, tuple[float, float]] = {}
        for key, q in (("gpu", resp.gpu_quota), ("tpu", resp.tpu_quota)):
            if q is not None:
                used = q.time_used.total_seconds() if q.time_used is not None else 0.0
                allowed = q.total_time_allowed
                out[key] = (float(used), float(allowed.total_seconds()) if allowed else 0.0)
        return out

    def pause(self, attempt: int) -> None:
        delay = settings.seconds("LAUNCH_KAGGLE_RETRY_S", default=1.0)
        self._sleep(min(delay * 2 ** (attempt - 1) * random.uniform(0.5, 1), 60.0))

    def note(self, message: str) -> None:
        if self._notify is not None:
            self._notify(message)

    def _retrying(self, what: str, fn: Callable[[], Any], *, idempotent: bool = True) -> Any:
        req = self._requests if self._requests is not None else _sdk("requests")
        delay = settings.seconds("LAUNCH_KAGGLE_RETRY_S", default=1.0)
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except req.exceptions.HTTPError as e:
                resp = e.response
                status = resp.status_code if resp is not None else 0
                reason = _reason(e)
                if not idempotent and status in RETRIED_STATUS and status != 429:
                    # Kaggle may have acted before the error (a 429 refuses before acting)
                    detail = f"{status} {reason}"
                    raise KaggleUnsureError(f"Kaggle {what} failed: {detail}", detail) from e
                if status not in RETRIED_STATUS or attempt == self.attempts:
                    if status == 401 or status == 403:
                        raise TargetUnavailableError(
                            f"Kaggle refused our credentials ({self.creds.source}): {reason}",
                            hint=CREDENTIALS_HINT,
                        ) from e
                    tries = f" after {attempt} tries" if attempt > 1 else ""
                    error = KaggleNotFoundError if status == 404 else TargetError
                    raise error(f"Kaggle {what} failed{tries}: {status} {reason}") from e
                wait = _retry_after(resp) if resp is not None else None
            except (req.exceptions.ConnectionError, req.exceptions.Timeout) as e:
                listens = not nothing_listens(self.url, e)
                if listens and not idempotent and not _never_sent(req, e):
                    detail = f"no answer ({type(e).__name__})"
                    raise KaggleUnsureError(f"Kaggle {what} failed: {detail}", detail) from e
                if attempt == self.attempts or not listens:
                    doing = what + (f", {attempt} tries" if attempt > 1 else "")
                    raise unreachable(
                        "Kaggle", self.url, "LAUNCH_KAGGLE_URL", "kaggle", e, doing
                    ) from e
                wait = None
            # full jitter, so parallel launchers do not retry in step
            pause = (
                wait if wait is not None else delay * 2 ** (attempt - 1) * random.uniform(0.5, 1)
            )
            self._sleep(min(pause, 60.0))
        raise AssertionError("unreachable")

    @property
    def username(self) -> str:
        if not self.creds.username:
            info = self.call("security", "introspect_token", {"token": self.creds.token or ""})
            if not info.get("active") or not info.get("username"):
                raise TargetUnavailableError(
                    f"Kaggle does not accept the API token from {self.creds.source}",
                    hint=CREDENTIALS_HINT,
                )
            self.creds = Credentials(
                str(info["username"]), token=self.creds.token, source=self.creds.source
            )
        return self.creds.username

    # ---- plain HTTP (upload and download URLs that Kaggle hands out; no auth) ---------------

    def upload_blob(
        self, path: Path, name: str, advance: Callable[[int], None] | None = None
    ) -> str:
        """Upload one file as a dataset blob; its token for CreateDataset(Version). `advance`
        hears of each block sent (a retried PUT starts over, and so does its count)."""
        size = path.stat().st_size
        start = self.call(
            "blobs",
            "start_blob_upload",
            {
                "type": "DATASET",
                "name": name,
                "contentLength": size,
                "lastModifiedEpochSeconds": int(path.stat().st_mtime),
            },
        )
        url, token = str(start["createUrl"]), str(start["token"])
        req = self._requests

        def put() -> Any:
            with path.open("rb") as f:
                body = CountingReader(f, advance) if advance is not None else f
                r = req.put(url, data=body, headers={"Content-Length": str(size)}, timeout=600)
            if r.status_code not in (200, 201):
                r.raise_for_status()
                # 308: the server kept part of it; starting over is simplest for small bundles
                raise req.exceptions.HTTPError(f"upload incomplete ({r.status_code})", response=r)
            return r

        self._retrying_put(put)
        return token

    def _retrying_put(self, put: Callable[[], Any]) -> None:
        req = self._requests
        for attempt in range(1, self.attempts + 1):
            try:
                put()
                return
            except (req.exceptions.HTTPError, req.exceptions.ConnectionError) as e:
                if attempt == self.attempts:
                    raise TargetError(
                        f"uploading to Kaggle failed after {attempt} tries: {e}"
                    ) from e
                delay = settings.seconds("LAUNCH_KAGGLE_RETRY_S", default=1.0)
                self._sleep(min(delay * 2**attempt, 60.0))

    def download(self, url: str, dest: Path, advance: Callable[[int], None] | None = None) -> int:
        """Fetch an output file URL into `dest` (written to a .part, then renamed); its size.

        Content-Length is checked, as the kaggle CLI does. `advance` hears of each chunk."""
        req = self._requests if self._requests is not None else _sdk("requests")
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)

        def get() -> Any:
            r = req.get(url, stream=True, timeout=TIMEOUT_S)
            r.raise_for_status()
            want = r.headers.get("Content-Length")
            got = 0
            with tmp.open("wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    got += len(chunk)
                    if advance is not None:
                        advance(len(chunk))
            if want is not None and int(want) != got:
                raise req.exceptions.ConnectionError(f"{url}: {got} of {want} bytes arrived")
            return got

        got = int(self._retrying(f"download {dest.name}", get))
        os.replace(tmp, dest)
        return got

    def log_stream(self, owner: str, slug: str, wait_s: float) -> list[LogEntry] | None:
        """The session's log so far from Kaggle's log stream (what `kaggle kernels logs
        --follow` reads): the JSON array of an ended session, or the SSE events that arrive
        until `wait_s` passes without one (4 x `wait_s` at most). None when the stream cannot
        be read (the caller falls back to ListKernelSessionOutput)."""
        sdk = self._client()
        req = self._requests
        session = sdk.http_client()._session  # kagglesdk's session: it carries the auth
        url = f"{self.url}/v1/kernels/logs/stream/{owner}/{slug}"
        events: list[Any] = []
        quiet = _sdk("urllib3.exceptions").HTTPError  # a read timeout on the raw stream
        try:
            r = session.get(
                url, stream=True, timeout=(10.0, wait_s), headers={"Accept": "text/event-stream"}
            )
            with r:
                if r.status_code != 200:
                    return None
                if "json" in r.headers.get("Content-Type", ""):
                    data = r.json()
                    return log_entries(rows({"log": data}, "log"))
                until = time.monotonic() + 4 * wait_s  # a chatty job must not hold us here
                for line in _arriving_lines(r.raw, until):
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:") :].strip()
                    if payload == "END_OF_LOG":
                        break
                    events.append(json.loads(payload))
        except (req.exceptions.ConnectionError, req.exceptions.Timeout, quiet):
            pass  # no event within wait_s: what arrived so far is the log so far
        except (req.exceptions.RequestException, ValueError):
            return None
        return log_entries(rows({"log": events}, "log"))


def _arriving_lines(raw: Any, until: float) -> Iterator[str]:
    """The stream's lines as they arrive, until the deadline. (requests' iter_lines waits for
    512-byte chunks: a quiet session's last lines, the kernel's first among them, would wait
    for more output.)"""
    buf = b""
    # urllib3 >= 2 reads what has arrived; 1.26 (which requests still allows) has no read1,
    # so there a line may wait for its chunk as with iter_lines
    read1 = getattr(raw, "read1", None)
    while time.monotonic() <= until:
        # what has arrived (at least a byte), b"" at the end; gzip undone as iter_lines does
        chunk: bytes = (
            read1(1 << 16, decode_content=True)
            if read1 is not None
            else raw.read(512, decode_content=True)
        )
        if not chunk:
            return
        *lines, buf = (buf + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")


def _reason(e: Any) -> str:
    """Kaggle's own message: the JSON body's `message`, else the HTTP reason."""
    resp = e.response
    try:
        body = resp.json() if resp is not None else None
    except ValueError:
        body = None
    if isinstance(body, dict) and cast("dict[str, Any]", body).get("message"):
        return str(cast("dict[str, Any]", body)["message"])
    return str(resp.reason if resp is not None and resp.reason else e)


def _never_sent(req: Any, e: Exception) -> bool:
    """The request never left: the connection did not open (a connect timeout, a refused or
    unresolvable host). Anything later may have reached Kaggle."""
    if isinstance(e, req.exceptions.ConnectTimeout):
        return True
    new_connection = _sdk("urllib3.exceptions").NewConnectionError
    reason = getattr(e.args[0], "reason", e.args[0]) if e.args else None
    return isinstance(reason, new_connection)


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("Retry-After") if resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


__all__ = [
    "Credentials",
    "KaggleClient",
    "KaggleNotFoundError",
    "KernelSession",
    "LogEntry",
    "api_url",
    "find_credentials",
    "rows",
    "sdk_installed",
]
