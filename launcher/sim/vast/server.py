"""The HTTP side: routing, auth, JSON with Vast's quirks, injected HTTP failures, admin knobs.

Stdlib `ThreadingHTTPServer` only. Every JSON answer carries `Content-Type: application/json`
exactly (the `vastai` CLI rejects anything else, even with a charset).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from launcher.sim.vast.catalog import gpu_names
from launcher.sim.vast.instances import ApiError, InstanceBook
from launcher.sim.vast.machines import MachineError
from launcher.sim.vast.query import (
    QueryError,
    as_dict,
    as_list,
    compile_filters,
    order_rows,
    parse_order,
)

Handler = Callable[["VastApp", "Request"], Any]


class Request:
    def __init__(self, method: str, path: str, query: dict[str, Any], body: Any, m: re.Match[str]):
        self.method, self.path, self.query, self.body, self.match = method, path, query, body, m

    def iid(self) -> int:
        return int(self.match.group(1))


class Text(str):
    """A plain-text answer (logs), not JSON."""


class VastApp:
    """State and behaviour behind the routes; `VastSim` owns one."""

    def __init__(self, book: InstanceBook, api_key: str | None, owner: str = "") -> None:
        self.book = book
        self.owner = owner  # the `launch.sim.owner` label on this emulator's containers
        self.api_key = api_key  # None: any non-empty key is accepted
        self.url = ""
        self._lock = threading.Lock()
        self._failures: deque[tuple[int, float | None]] = deque()
        self._log_results: dict[str, str] = {}
        self.seen: deque[tuple[str, str, str | None]] = deque(maxlen=500)  # method, path, auth

    def fail_next(self, count: int = 1, status: int = 429, retry_after: float | None = 1) -> None:
        with self._lock:
            for _ in range(count):
                self._failures.append((status, retry_after if status == 429 else None))

    def take_failure(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def key_ok(self, auth: str | None, query: dict[str, Any]) -> bool:
        key: str | None = None
        if auth and auth.startswith("Bearer "):
            key = auth[len("Bearer ") :].strip()
        elif "api_key" in query:
            key = str(query["api_key"])
        if not key:
            return False
        return self.api_key is None or secrets.compare_digest(key, self.api_key)

    def store_log(self, text: str) -> str:
        token = secrets.token_hex(8)
        with self._lock:
            self._log_results[token] = text
        return f"{self.url}/_sim/logs/{token}"

    def log_result(self, token: str) -> str | None:
        with self._lock:
            return self._log_results.get(token)


# ---- API routes ------------------------------------------------------------------------------


def _gpu_names(app: VastApp, r: Request) -> Any:
    return {"gpu_names": gpu_names(app.book.offers)}


def _user(app: VastApp, r: Request) -> Any:
    return {
        "id": 1, "username": "sim", "email": "sim@example.invalid", "credit": 100.0,
        "balance": 0.0, "can_pay": True, "host_agreement_accepted": False, "ssh_key": "",
    }  # fmt: skip


def _search(app: VastApp, r: Request) -> Any:
    body = as_dict(r.body)
    if r.method == "PUT":  # `search offers --new`: {"select_cols": [...], "q": {...}}
        body = as_dict(body.get("q"))
    return {"offers": app.book.search(body)}


def _create(app: VastApp, r: Request) -> Any:
    body = as_dict(r.body)
    iid = app.book.create(r.iid(), body)
    return {"success": True, "new_contract": iid, "instance_api_key": secrets.token_hex(16)}


def _list_v1(app: VastApp, r: Request) -> Any:
    rows = [app.book.row(i) for i in app.book.all()]
    raw_filters: Any = r.query.get("select_filters")
    if raw_filters is not None and not isinstance(raw_filters, dict):
        raise QueryError("select_filters must be a JSON object")
    filters = as_dict(raw_filters)
    if rows and filters:
        keep = compile_filters(filters, rows, rows[0].keys())
        rows = [row for row in rows if keep(row)]
    order = parse_order(r.query.get("order_by") or [{"col": "id", "dir": "asc"}])
    rows = order_rows(rows, order)
    total = len(rows)
    labels: dict[str, int] = {}
    for row in rows:
        labels[str(row["label"])] = labels.get(str(row["label"]), 0) + 1
    start = int(r.query.get("after_token") or 0)
    limit = max(1, min(int(r.query.get("limit") or 25), 1000))
    page = rows[start : start + limit]
    cols = r.query.get("select_cols")
    if isinstance(cols, list) and cols and "*" not in cols:
        page = [{str(c): row.get(str(c)) for c in as_list(cols)} for row in page]
    nxt = str(start + limit) if start + limit < total else None
    return {"instances": page, "next_token": nxt, "total_instances": total, "label_counts": labels}


def _list_v0(app: VastApp, r: Request) -> Any:
    return {"instances": [app.book.row(i) for i in app.book.all()]}


def _show(app: VastApp, r: Request) -> Any:
    inst = app.book.get(r.iid())
    return {"instances": app.book.row(inst) if inst else None}


def _destroy(app: VastApp, r: Request) -> Any:
    app.book.destroy(r.iid())
    return {"success": True}


def _destroy_many(app: VastApp, r: Request) -> Any:
    for iid in as_list(as_dict(r.body).get("instance_ids") or []):
        app.book.destroy(int(iid))
    return {"success": True}


def _change(app: VastApp, r: Request) -> Any:
    body = as_dict(r.body)
    if "label" in body:
        app.book.set_label(r.iid(), body["label"])
    if "state" in body:
        app.book.set_state(r.iid(), str(body["state"]))
    return {"success": True}


def _bid(app: VastApp, r: Request) -> Any:
    app.book.set_bid(r.iid(), float(as_dict(r.body).get("price", "nan")))
    return {"success": True}


def _reboot(app: VastApp, r: Request) -> Any:
    app.book.reboot(r.iid())
    return {"success": True}


def _attach(app: VastApp, r: Request) -> Any:
    key = as_dict(r.body).get("ssh_key")
    if not isinstance(key, str):
        raise ApiError(400, "invalid_args", "ssh_key is required")
    app.book.attach_key(r.iid(), key)
    return {"success": True, "msg": f"ssh key attached to instance {r.iid()}"}


def _request_logs(app: VastApp, r: Request) -> Any:
    tail = int(as_dict(r.body).get("tail") or 1000)
    text = app.book.logs(r.iid(), tail)
    return {"success": True, "result_url": app.store_log(text)}


def _filters(app: VastApp, r: Request) -> Any:
    return {"filters": []}


# ---- admin (/_sim) routes: test control, no auth, 127.0.0.1 only -------------------------------


def _log_result(app: VastApp, r: Request) -> Any:
    text = app.log_result(r.match.group(1))
    if text is None:
        raise ApiError(404, "not_found", "no such log result")
    return Text(text)


def _knob(app: VastApp, r: Request) -> Any:
    iid, knob = int(r.match.group(1)), r.match.group(2)
    body = as_dict(r.body)
    match knob:
        case "preempt":
            app.book.preempt(
                iid, status=str(body.get("status", "stopped")), pause=bool(body.get("pause"))
            )
        case "resume":
            app.book.resume(iid)
        case "exit":
            app.book.exit(iid)
        case "drop_ssh":
            app.book.drop_ssh(iid)
        case "restore_ssh":
            app.book.restore_ssh(iid)
        case _:
            raise ApiError(404, "not_found", f"unknown knob {knob!r}")
    return {"success": True}


def _fail(app: VastApp, r: Request) -> Any:
    body = as_dict(r.body)
    app.fail_next(
        int(body.get("count", 1)), int(body.get("status", 429)), body.get("retry_after", 1)
    )
    return {"success": True}


def _fail_create(app: VastApp, r: Request) -> Any:
    body = as_dict(r.body)
    app.book.fail_next_create(
        str(body.get("mode", "error")), int(body.get("status", 400)), str(body.get("msg", ""))
    )
    return {"success": True}


def _state(app: VastApp, r: Request) -> Any:
    return {
        "instances": [app.book.row(i) for i in app.book.all()],
        "rented_offers": [o["id"] for o in app.book.offers if o.get("rented")],
        "machines": app.book.machines.kind,
        "owner": app.owner,
    }


N = r"(\d+)"
ROUTES: list[tuple[str, re.Pattern[str], Handler, bool]] = [
    (m, re.compile(f"^{p}/?$"), h, auth)
    for m, p, h, auth in [
        ("GET", "/api/v0/gpu_names/unique", _gpu_names, False),
        ("GET", "/api/v0/users/current", _user, True),
        ("POST", "/api/v0/bundles", _search, True),
        ("PUT", "/api/v0/search/asks", _search, True),
        ("PUT", f"/api/v0/asks/{N}", _create, True),
        ("GET", "/api/v1/instances", _list_v1, True),
        ("GET", "/api/v0/instances", _list_v0, True),
        ("DELETE", "/api/v0/instances", _destroy_many, True),
        ("GET", "/api/v0/instances/filters", _filters, True),
        ("PUT", f"/api/v0/instances/bid_price/{N}", _bid, True),
        ("PUT", f"/api/v0/instances/request_logs/{N}", _request_logs, True),
        ("PUT", f"/api/v0/instances/reboot/{N}", _reboot, True),
        ("POST", f"/api/v0/instances/{N}/ssh", _attach, True),
        ("GET", f"/api/v0/instances/{N}", _show, True),
        ("PUT", f"/api/v0/instances/{N}", _change, True),
        ("DELETE", f"/api/v0/instances/{N}", _destroy, True),
        ("GET", "/_sim/logs/([0-9a-f]+)", _log_result, False),
        ("POST", f"/_sim/instances/{N}/(\\w+)", _knob, False),
        ("POST", "/_sim/fail", _fail, False),
        ("POST", "/_sim/fail_create", _fail_create, False),
        ("GET", "/_sim/state", _state, False),
    ]
]


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def make_handler(app: VastApp, *, verbose: bool = False) -> type[BaseHTTPRequestHandler]:
    class VastHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vast-sim/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            if verbose:
                super().log_message(format, *args)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(payload, Text):
                data, ctype = payload.encode(), "text/plain; charset=utf-8"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = {k: _decode(v[-1]) for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                self._send(400, {"success": False, "error": "invalid_json", "msg": "bad JSON"})
                return
            auth = self.headers.get("Authorization")
            app.seen.append((self.command, parts.path, auth))
            for method, pattern, handler, needs_auth in ROUTES:
                m = pattern.match(parts.path)
                if m is None or method != self.command:
                    continue
                if parts.path.startswith("/api/"):
                    failure = app.take_failure()
                    if failure is not None:
                        status, retry = failure
                        hdrs = {"Retry-After": f"{retry:g}"} if retry is not None else {}
                        err = "rate_limited" if status == 429 else "server_error"
                        msg = "Too many requests" if status == 429 else "injected server error"
                        self._send(status, {"success": False, "error": err, "msg": msg}, hdrs)
                        return
                if needs_auth and not app.key_ok(auth, query):
                    self._send(
                        401,
                        {
                            "success": False,
                            "error": "auth_error",
                            "msg": "Invalid or missing API key",
                        },
                    )
                    return
                try:
                    result = handler(app, Request(self.command, parts.path, query, body, m))
                except ApiError as e:
                    self._send(e.status, e.body)
                except (QueryError, ValueError, TypeError) as e:
                    self._send(400, {"success": False, "error": "invalid_args", "msg": str(e)})
                except MachineError as e:
                    self._send(500, {"success": False, "error": "machine_error", "msg": str(e)})
                else:
                    self._send(200, result)
                return
            self._send(
                404,
                {"success": False, "error": "not_found", "msg": f"{self.command} {parts.path}"},
            )

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return VastHandler


def make_server(
    app: VastApp, host: str, port: int, *, verbose: bool = False
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(app, verbose=verbose))
    server.daemon_threads = True
    app.url = f"http://{host}:{server.server_address[1]}"
    return server
