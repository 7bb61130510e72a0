"""Emulated machines' internet: services on this host's loopback, at the same address.

A real Vast instance or Kaggle kernel (with internet on) reaches the internet; an emulated one is
a container on the docker bridge, and the servers it should reach in tests (the Kaggle emulator,
a file server) listen on this host's 127.0.0.1 only. `Egress` gives every such machine the same
view as this host for the ports it is told about. For port P the host side listens on a unix
socket `P.sock` in a folder that is mounted into each container, and relays what arrives to
127.0.0.1:P here; inside the container, `RELAY` (started first thing when the image has python3)
listens on the container's own 127.0.0.1:P and relays to that socket. So `http://127.0.0.1:P/...`
means the same service inside a machine as here, with no address but loopback and a unix socket
ever opened. Ports can be added while the sim runs: the relay looks for new sockets every second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path

MOUNT = "/run/launch-sim-egress"
RELAY_FILE = "relay.py"

RELAY = r"""# launch sim egress relay: 127.0.0.1:P in this container -> the unix socket P.sock
import os, socket, threading, time
D = os.path.dirname(os.path.abspath(__file__))


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(port, path):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(("127.0.0.1", port))
    except OSError:
        return  # something in the image already listens there
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        up = socket.socket(socket.AF_UNIX)
        try:
            up.connect(path)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn), daemon=True).start()


seen = set()
while True:
    for name in os.listdir(D):
        if name.endswith(".sock") and name not in seen and name[:-5].isdigit():
            seen.add(name)
            args = (int(name[:-5]), os.path.join(D, name))
            threading.Thread(target=serve, args=args, daemon=True).start()
    time.sleep(1)
"""

# what a machine runs first (a no-op without the mount or without python3 in the image)
BOOT_LINE = (
    f"if [ -f {MOUNT}/{RELAY_FILE} ] && command -v python3 >/dev/null 2>&1; then "
    f"(python3 {MOUNT}/{RELAY_FILE} >/dev/null 2>&1 &); fi"
)


class Egress:
    """The host side: one unix-socket listener per allowed port, relaying to 127.0.0.1."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="sim-egress-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / RELAY_FILE).write_text(RELAY)
        self._servers: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._closed = False

    def allow(self, port: int) -> None:
        """Instances reach 127.0.0.1:`port` of this host at 127.0.0.1:`port`."""
        with self._lock:
            if port in self._servers or self._closed:
                return
            path = self.folder / f"{port}.sock"
            if len(str(path).encode()) > 107:  # AF_UNIX's sun_path limit
                raise ValueError(
                    f"the egress socket path {path} is too long for a unix socket (107 bytes): "
                    "give the emulator a shorter state folder"
                )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(str(path))
            os.chmod(path, 0o666)  # the container's user, whoever it is, may connect
            srv.listen(64)
            self._servers[port] = srv
        threading.Thread(target=self._accept, args=(srv, port), daemon=True).start()

    def _accept(self, srv: socket.socket, port: int) -> None:
        while not self._closed:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed
            if self._closed:
                conn.close()
                return
            try:
                up = socket.create_connection(("127.0.0.1", port), timeout=10)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        """Stop listening (the accept loops end) and remove the sockets; relays of open
        connections end with them."""
        with self._lock:
            self._closed = True
            servers, self._servers = dict(self._servers), {}
        for port, srv in servers.items():
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            srv.close()
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{port}.sock").unlink()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
