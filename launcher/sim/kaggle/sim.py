"""`KaggleSim`: the emulator as an object (tests) and `serve()` (the foreground command)."""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from launcher.sim.egress import Egress
from launcher.sim.kaggle.blobs import BlobStore
from launcher.sim.kaggle.datasets import DatasetStore
from launcher.sim.kaggle.kernels import KernelStore
from launcher.sim.kaggle.quota import GPU, TPU, QuotaBook
from launcher.sim.kaggle.runner import Limits, Runner, Session, docker_answers, remove_containers
from launcher.sim.kaggle.server import Backend, Faults, handler_class

DEFAULT_USERS = {"alice": "0123456789abcdef"}
HOUR = 3600.0


class KaggleSim:
    """A Kaggle emulator on 127.0.0.1 that the unchanged `kaggle` client talks to.

    Kernels really run (``runtime``: "docker", "process" or "auto" = docker when an engine
    answers). Limits are in seconds so tests can shrink them: ``session_seconds`` (Kaggle: about
    12 h), ``gpu_quota_seconds`` / ``tpu_quota_seconds`` (about 30 h / 20 h a week),
    ``grace_seconds`` between SIGTERM and SIGKILL, ``queue_seconds`` spent QUEUED.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        data_dir: Path | None = None,
        image: str = "launch-base:local",
        runtime: str = "auto",
        session_seconds: float = 12 * HOUR,
        grace_seconds: float = 30.0,
        queue_seconds: float = 1.0,
        gpu_quota_seconds: float = 30 * HOUR,
        tpu_quota_seconds: float = 20 * HOUR,
        egress_ports: list[int] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the Kaggle sim listens on the loopback interface only")
        self.host, self.port = host, port
        self.instance = secrets.token_hex(4)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="kaggle-sim-"))
        self.session_seconds = float(session_seconds)
        self.grace_seconds = float(grace_seconds)
        self.queue_seconds = float(queue_seconds)
        if runtime == "auto":
            runtime = "docker" if docker_answers() else "process"
        if runtime not in ("docker", "process"):
            raise ValueError(f"runtime must be docker, process or auto, not {runtime!r}")
        self.runtime = runtime
        self.quota = QuotaBook(gpu_quota_seconds, tpu_quota_seconds)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.datasets = DatasetStore(self.data_dir / "datasets", self.blobs)
        limits = Limits(
            session_seconds=lambda: self.session_seconds,
            grace_seconds=lambda: self.grace_seconds,
            queue_seconds=lambda: self.queue_seconds,
            quota_left=lambda s: self.quota.remaining(s.owner, s.accelerator or GPU),
        )
        # kernels with internet on reach these ports of this host (launcher/sim/egress.py)
        self.egress = Egress(self.data_dir / "egress")
        for p in egress_ports or []:
            self.egress.allow(p)
        self.runner = Runner(
            runtime=runtime,
            image=image,
            instance=self.instance,
            limits=limits,
            egress=self.egress.folder,
        )
        self.kernels = KernelStore(
            self.data_dir / "sessions", self.datasets, self.quota, self.runner
        )
        self.faults = Faults()
        self.backend = Backend(
            blobs=self.blobs,
            datasets=self.datasets,
            kernels=self.kernels,
            quota=self.quota,
            users=dict(users or DEFAULT_USERS),
            tokens=dict(tokens or {}),
            faults=self.faults,
            control=self.control,
        )
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sim is not started")
        return self.backend.base_url

    @property
    def calls(self) -> list[str]:
        """Every request seen, as "VERB /path" (``/api/v1/...`` or ``/v1/...`` as it came)."""
        return self.backend.calls

    def start(self) -> Self:
        httpd = ThreadingHTTPServer((self.host, self.port), handler_class(self.backend))
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.backend.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=httpd.serve_forever, name="kaggle-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every session (SIGKILL), remove its containers and the sim's data."""
        for s in self.kernels.sessions():
            s.request_stop("cancel")
        self.grace_seconds = 0.0
        self.runner.join(timeout=30)
        if self.runtime == "docker":
            remove_containers(self.instance)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.egress.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- failure knobs ----------------------------------------------------------------------

    def reject_next_push(self, message: str = "Kernel push rejected by the sim") -> None:
        """The next SaveKernel answers 200 with this ``error`` (the CLI still exits 0)."""
        self.kernels.reject_next = message

    def fail_next_push(self, mode: str = "lost", status: int = 502, message: str = "") -> None:
        """The next SaveKernel answers `status` (5xx): mode "lost" after the kernel version and
        its session were made (an answer lost after Kaggle acted: a blind retry runs the job
        twice), "error" before anything was made."""
        if mode not in ("lost", "error"):
            raise ValueError(f"unknown push failure mode {mode!r}: lost or error")
        self.kernels.fail_push = (mode, int(status), message)

    def fail_next_kernel(self, message: str = "injected kernel failure") -> None:
        """The next session's script exits non-zero (with ``message`` on stderr) -> ERROR."""
        self.kernels.fail_next = message

    def fail_next_requests(
        self,
        count: int,
        status: int = 429,
        *,
        retry_after: float | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests (RPCs containing ``method``) with ``status``."""
        with self.faults.lock:
            self.faults.count, self.faults.status = count, status
            self.faults.retry_after, self.faults.method = retry_after, method

    def interrupt_next_upload(self, after_bytes: int) -> None:
        """The next upload PUT keeps ``after_bytes`` bytes and answers 503; clients resume."""
        self.blobs.interrupt_after = after_bytes

    def set_session_seconds(self, seconds: float) -> None:
        """Change the session cap; running sessions past it are stopped at once."""
        self.session_seconds = float(seconds)

    def set_quota(
        self,
        *,
        user: str | None = None,
        gpu_seconds: float | None = None,
        tpu_seconds: float | None = None,
        gpu_used: float | None = None,
        tpu_used: float | None = None,
    ) -> None:
        """Change the weekly allowance or a user's time used; applies to running sessions."""
        if gpu_seconds is not None:
            self.quota.set_allowed(GPU, gpu_seconds)
        if tpu_seconds is not None:
            self.quota.set_allowed(TPU, tpu_seconds)
        who = user or next(iter(self.backend.users))
        if gpu_used is not None:
            self.quota.set_used(who, GPU, gpu_used)
        if tpu_used is not None:
            self.quota.set_used(who, TPU, tpu_used)

    def allow_egress(self, port: int) -> None:
        """Kernels with internet reach this host's 127.0.0.1:`port` at their own 127.0.0.1:`port`,
        as a real kernel reaches a server on the internet."""
        self.egress.allow(port)

    def seed_dataset(self, ref: str, folder: Path, *, is_private: bool = False) -> None:
        """Put a dataset on the emulated Kaggle as if its owner had uploaded `folder`; each call
        adds a version."""
        owner, _, slug = ref.partition("/")
        self.datasets.seed(owner, slug, folder, is_private=is_private)

    def dataset_bytes_served(self, ref: str) -> int:
        """Archive bytes sent for `owner/slug` through DownloadDataset's links, to anyone."""
        return self.datasets.served.get(ref, 0)

    @property
    def bytes_uploaded(self) -> int:
        """Every byte the blob uploads (datasets' files) brought, since the emulator started."""
        return self.blobs.bytes_received

    def set_secret(self, label: str, value: str, *, user: str | None = None) -> None:
        """A secret the user's kernels read with ``kaggle_secrets.UserSecretsClient``."""
        who = (user or next(iter(self.backend.users))).lower()
        self.kernels.secrets.setdefault(who, {})[label] = value

    def expire_session(self, owner: str, slug: str) -> None:
        """The kernel's running session reaches its cap now (SIGTERM, grace, SIGKILL, ERROR)."""
        self.latest_session(owner, slug).request_stop("timeout")

    def latest_session(self, owner: str, slug: str) -> Session:
        return self.kernels.latest_session(owner, owner, slug, None)

    def wait(self, owner: str, slug: str, timeout: float = 60.0) -> Session:
        """Block until the kernel's latest session has ended; returns it."""
        s = self.latest_session(owner, slug)
        with s.changed:
            if not s.changed.wait_for(lambda: s.terminal, timeout):
                raise TimeoutError(f"{owner}/{slug} is still {s.status} after {timeout}s")
        return s

    def control(self, knob: str, req: dict[str, Any]) -> dict[str, Any]:
        """The knobs over HTTP: ``POST /_emu/control/<knob>`` with the keyword arguments."""
        knobs: dict[str, Callable[..., None]] = {
            "reject-push": self.reject_next_push,
            "fail-push": self.fail_next_push,
            "fail-kernel": self.fail_next_kernel,
            "fail-requests": self.fail_next_requests,
            "interrupt-upload": self.interrupt_next_upload,
            "session-seconds": self.set_session_seconds,
            "quota": self.set_quota,
            "expire-session": self.expire_session,
            "secret": self.set_secret,
        }
        if knob not in knobs:
            raise KeyError(f"unknown knob {knob!r}; known: {', '.join(sorted(knobs))}")
        knobs[knob](**req)
        return {"ok": True}


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None],
    stop_event: threading.Event | None = None,
    **options: Any,
) -> None:
    """Run the sim in the foreground until SIGINT/SIGTERM (or ``stop_event``); calls
    ``on_ready(url)`` once it answers."""
    stop = stop_event or threading.Event()
    sim = KaggleSim(host=host, port=port, **options).start()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _sig, _frame: stop.set())
    try:
        on_ready(sim.url)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
