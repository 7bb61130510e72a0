"""`VastSim` (in-process, for tests) and `serve` (blocking, for `launch sim serve vast`)."""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.sim.egress import Egress
from launcher.sim.vast.catalog import default_catalog, load_catalog
from launcher.sim.vast.instances import InstanceBook
from launcher.sim.vast.machines import Machines, pick_machines
from launcher.sim.vast.server import VastApp, make_server

DEFAULT_API_KEY = "vast-sim-key"


class VastSim:
    """A Vast.ai emulator on 127.0.0.1 whose instances are real containers (or processes).

    `start()` listens on a free port (or `port`); `url` is what `VAST_URL`/`LAUNCH_VAST_URL`
    point at. `stop()` removes every machine this emulator created. The failure knobs are
    methods here and `POST /_sim/...` endpoints for other processes.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = DEFAULT_API_KEY,
        catalog: list[dict[str, Any]] | Path | None = None,
        loading_delay: float = 1.0,
        running_delay: float = 1.0,
        machines: str | Machines = "auto",
        state_dir: Path | None = None,
        verbose: bool = False,
        egress_ports: list[int] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the emulator listens on the loopback interface only")
        if isinstance(catalog, Path):
            offers = load_catalog(catalog)
        else:
            offers = [dict(o) for o in catalog] if catalog is not None else default_catalog()
        self.owner = secrets.token_hex(4)
        self._machines_arg = machines
        self._host, self._port, self._verbose = host, port, verbose
        self._delays = (loading_delay, running_delay)
        self._state_dir = state_dir
        self._offers = offers
        self._api_key = api_key
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.book: InstanceBook | None = None
        self.app: VastApp | None = None
        self._egress_ports = list(egress_ports or [])
        self.egress: Egress | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> VastSim:
        self.egress = Egress(self._state_dir / "egress" if self._state_dir else None)
        for port in self._egress_ports:
            self.egress.allow(port)
        machines = (
            self._machines_arg
            if not isinstance(self._machines_arg, str)
            else pick_machines(self.owner, self._machines_arg, self._state_dir, self.egress.folder)
        )
        self.book = InstanceBook(
            self._offers,
            machines,
            loading_delay=self._delays[0],
            running_delay=self._delays[1],
            state_dir=self._state_dir,
        )
        self.app = VastApp(self.book, self._api_key, self.owner)
        self._server = make_server(self.app, self._host, self._port, verbose=self._verbose)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (after `start()`'s set-up) until interrupted."""
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.book is not None:
            self.book.close()
        if self.egress is not None:
            self.egress.close()

    def __enter__(self) -> VastSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.app is None:
            raise RuntimeError("VastSim is not started")
        return self.app.url

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @property
    def machines_kind(self) -> str:
        return self._book().machines.kind

    def _book(self) -> InstanceBook:
        if self.book is None:
            raise RuntimeError("VastSim is not started")
        return self.book

    def allow_egress(self, port: int) -> None:
        """Instances reach this host's 127.0.0.1:`port` at their own 127.0.0.1:`port`, as a
        real instance reaches a service on the internet (see egress.py)."""
        if self.egress is None:
            raise RuntimeError("VastSim is not started")
        self.egress.allow(port)

    # ---- inspection -------------------------------------------------------------------------

    def instance(self, iid: int) -> dict[str, Any] | None:
        """The row `show instance` would return, or None once destroyed."""
        inst = self._book().get(iid)
        return self._book().row(inst) if inst else None

    def instances(self) -> list[dict[str, Any]]:
        return [self._book().row(i) for i in self._book().all()]

    def machine_handle(self, iid: int) -> str | None:
        """The container id (or process id) behind an instance."""
        inst = self._book().get(iid)
        return inst.handle if inst else None

    def offer(self, offer_id: int) -> dict[str, Any]:
        return next(o for o in self._offers if o["id"] == offer_id)

    # ---- failure knobs ----------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 429, retry_after: float | None = 1) -> None:
        """Answer the next `count` API requests with `status` (429 carries Retry-After)."""
        assert self.app is not None
        self.app.fail_next(count, status, retry_after)

    def fail_next_create(self, mode: str = "error", status: int = 400, msg: str = "") -> None:
        """The next create fails: "error" refuses it; "lost" creates it but answers `status`."""
        self._book().fail_next_create(mode, status, msg)

    def preempt(self, iid: int, *, status: str = "stopped", pause: bool = False) -> None:
        """Outbid: the machine is stopped (or paused); actual != intended (running)."""
        self._book().preempt(iid, status=status, pause=pause)

    def resume(self, iid: int) -> None:
        self._book().resume(iid)

    def exit(self, iid: int) -> None:
        """The instance's main process dies: actual_status becomes exited."""
        self._book().exit(iid)

    def drop_ssh(self, iid: int) -> None:
        """Kill every sshd of the instance (listener and open sessions)."""
        self._book().drop_ssh(iid)

    def restore_ssh(self, iid: int) -> None:
        self._book().restore_ssh(iid)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None],
    state_dir: Path | None = None,
    api_key: str | None = DEFAULT_API_KEY,
    catalog: Path | None = None,
    loading_delay: float = 1.0,
    running_delay: float = 1.0,
    machines: str = "auto",
    verbose: bool = False,
    egress_ports: list[int] | None = None,
) -> None:
    """Run the emulator until SIGINT, SIGTERM or SIGHUP; `on_ready(url)` once it listens.
    Blocking. Every machine it made (containers, processes) is removed on the way out."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def interrupt(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, interrupt)
    sim = VastSim(
        host=host,
        port=port,
        api_key=api_key,
        catalog=catalog,
        loading_delay=loading_delay,
        running_delay=running_delay,
        machines=machines,
        state_dir=state_dir,
        verbose=verbose,
        egress_ports=egress_ports,
    )
    sim.start()
    try:
        if sim.machines_kind == "process":  # never a silent stand-in for the real thing
            print(
                "vast sim: no docker engine answers: instances are processes on this host "
                "behind their own sshd; they share its files and do not run the requested "
                "image (--machines docker refuses instead)",
                file=sys.stderr,
                flush=True,
            )
        on_ready(sim.url)
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
