"""SSH and SFTP to a rented instance, with paramiko (this module and the trees over it in
`sftp.py` are the only ones of the Vast target that use it).

- One launcher-managed ed25519 key pair under $LAUNCH_HOME/keys/ (created once, 0600); its public
  half is attached to each instance.
- Host keys are pinned on first use: the first connection records the server's key (the target
  stores it in the run handle) and every later one must present the same key, else
  `HostKeyChangedError`. Never `AutoAddPolicy` (it accepts anything, always).
- Keepalives, and bounded reconnects with backoff: an operation that hits a dropped connection
  reconnects and is tried again, a few times, then raises `SshUnreachableError`.
- AES-GCM preferred, and re-keys left to the server (see `_transport`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.errors import TargetError

KEY_NAME = "vast_ed25519"
# what a dropped connection raises mid-operation (callers outside this module catch these)
TRANSIENT: tuple[type[BaseException], ...] = (paramiko.SSHException, OSError, EOFError)
T = TypeVar("T")


class SshUnreachableError(TargetError):
    """The instance did not answer over SSH within the retries."""


class HostKeyChangedError(TargetError):
    """The instance presented a host key other than the one pinned for this run."""


def ensure_key(home: Path) -> tuple[Path, str]:
    """The launcher's key pair: (private key path, OpenSSH public key line). Created once."""
    keys = home / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys / KEY_NAME
    pub = path.with_suffix(".pub")
    if not path.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        line = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub.write_text(line.decode() + " launch\n")
        try:  # another launcher may have won the race: keep whichever landed first
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    os.chmod(path, 0o600)
    if not pub.exists():
        key = paramiko.Ed25519Key.from_private_key_file(str(path))
        pub.write_text(f"{key.get_name()} {key.get_base64()} launch\n")
    return path, pub.read_text().strip()


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """Accept the first key seen (and record it); afterwards only that key."""

    def __init__(self, pinned: str | None, on_pin: Callable[[str], None]) -> None:
        self.pinned = pinned
        self.on_pin = on_pin

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        seen = key_line(key)
        if self.pinned is None:
            self.pinned = seen
            self.on_pin(seen)
            return
        if seen != self.pinned:
            raise HostKeyChangedError(
                f"the host key of {hostname} changed since this run first connected "
                f"(pinned {self.pinned[:40]}..., now {seen[:40]}...): refusing to connect",
                hint="if the instance was really rebuilt, start a new run",
            )


# AES-GCM first: an AEAD cipher needs no separate MAC pass, which in paramiko is per-packet
# Python work. Measured on a 256 MB pull (bench/vast_sync.py): ~40% faster than aes128-ctr with
# hmac-sha2-256, paramiko's default. Servers without it negotiate the rest of the list.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# A stream channel's receive window. paramiko's 2 MB lets at most 2 MB be in flight: from a
# host 150 ms away that caps a pull at ~13 MB/s whatever the link; 16 MB lifts it to ~100 MB/s.
STREAM_WINDOW = 16 << 20


# NOTE: paramiko starting a re-key itself (after 512 MB) while a session channel streams to us
# races its own window adjustments and fails with "Key-exchange timed out" (paramiko#822; seen
# here on the third 256 MB pull). The server still re-keys when its limits say so, and paramiko
# answers that fine, so this transport never starts one.
_NEVER = 1 << 62


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        # SFTP is many small request/answer round trips: without this, each small write waits
        # on Nagle and the peer's delayed ACK (~40 ms), which dominated many-file pulls
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock, **kwargs)
    transport.packetizer.REKEY_BYTES = transport.packetizer.REKEY_PACKETS = _NEVER
    opts = transport.get_security_options()
    known = tuple(opts.ciphers)
    opts.ciphers = (
        *(c for c in _FAST_CIPHERS if c in known),
        *(c for c in known if c not in _FAST_CIPHERS),
    )
    return transport


def _quiet_paramiko() -> None:
    """paramiko logs a traceback for every refused banner while sshd starts; with no handler
    configured, Python's last-resort handler would print those to the user's terminal. The
    errors that matter reach us as exceptions."""
    log = logging.getLogger("paramiko")
    if not log.handlers:
        log.addHandler(logging.NullHandler())


class SshConn:
    """One SSH connection as root to an instance, re-established on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        key_path: Path,
        *,
        host_key: str | None = None,
        on_pin: Callable[[str], None] = lambda _k: None,
        attempts: int = 3,
        timeout: float = 15.0,
    ) -> None:
        _quiet_paramiko()
        self.host, self.port = host, port
        self.key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
        self.policy = _PinPolicy(host_key, on_pin)
        self.attempts = attempts
        self.timeout = timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def host_key(self) -> str | None:
        return self.policy.pinned

    # ---- connection -------------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(self.policy)
        try:
            client.connect(
                self.host,
                port=self.port,
                username="root",
                pkey=self.key,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                allow_agent=False,
                look_for_keys=False,
                transport_factory=_transport,
            )
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        return client

    def close(self) -> None:
        for thing in (self._sftp, self._client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._sftp = self._client = None

    def retry(self, what: str, op: Callable[[], T]) -> T:
        """`op()`, reconnecting after a dropped connection; bounded, with backoff."""
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                return op()
            except HostKeyChangedError:
                raise
            except (paramiko.SSHException, OSError, EOFError) as e:
                if isinstance(e, FileNotFoundError | PermissionError):
                    raise
                last = e
                self.close()
                if attempt + 1 < self.attempts:
                    time.sleep(0.5 * 2**attempt)
        raise SshUnreachableError(
            f"ssh to {self.host}:{self.port} failed ({what}): {_said(last)}"
        ) from last

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.connect().open_sftp()
        return self._sftp

    # ---- commands ---------------------------------------------------------------------------

    def run(
        self, cmd: str, *, timeout: float = 120.0, stdin: bytes | None = None
    ) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of `cmd` run by the remote shell, fed `stdin`."""

        def op() -> tuple[int, str, str]:
            inp, out, err = self.connect().exec_command(cmd, timeout=timeout)
            if stdin is not None:  # a long path list would not fit one argument (128 KB)
                inp.write(stdin)
                inp.channel.shutdown_write()
            o, e = out.read(), err.read()
            return (
                out.channel.recv_exit_status(),
                o.decode(errors="replace"),
                e.decode(errors="replace"),
            )

        return self.retry("run", op)

    def exec_channel(self, cmd: str, *, timeout: float = 120.0) -> paramiko.Channel:
        """A session channel running `cmd`, for callers that stream through it themselves; a
        read or write that stalls `timeout` seconds raises (socket.timeout, an OSError)."""
        transport = self.connect().get_transport()
        if transport is None:
            raise EOFError("the ssh connection closed")
        chan = transport.open_session(timeout=30, window_size=STREAM_WINDOW)
        try:
            chan.settimeout(timeout)
            chan.exec_command(cmd)
        except BaseException:
            chan.close()
            raise
        return chan

    @staticmethod
    def failure_of(chan: paramiko.Channel, wait_s: float = 10.0) -> str | None:
        """Why the command on `chan` failed, when it did: its stderr, if it exited non-zero and
        said something. None for a command killed with its connection (sshd gone, network cut),
        which says nothing: that one is worth a retry. sshd sends the end of output before the
        exit status, so this waits for the status (a dropped connection ends the wait too)."""
        chan.status_event.wait(wait_s)
        err = b""
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        why = err.decode(errors="replace").strip()[-500:]
        if why and chan.exit_status_ready() and chan.recv_exit_status() > 0:
            return why
        return None

    def check(self, cmd: str, *, timeout: float = 120.0, stdin: bytes | None = None) -> str:
        code, out, err = self.run(cmd, timeout=timeout, stdin=stdin)
        if code != 0:
            raise TargetError(f"remote command failed ({code}): {cmd[:80]}: {err.strip()[-500:]}")
        return out

    def start_detached(self, cmd: str, log: str = "/dev/null") -> None:
        """Start `cmd` in its own session, immune to hang-ups: it outlives this connection."""
        wrapped = f"setsid nohup sh -c {shlex.quote(cmd)} > {shlex.quote(log)} 2>&1 < /dev/null &"
        self.check(wrapped, timeout=30)

    # ---- files ------------------------------------------------------------------------------

    def write_bytes(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        """Write a remote file atomically (temp file + rename)."""
        tmp = f"{remote}.launch-tmp"

        def op() -> None:
            sftp = self.sftp()
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, remote)

        self.retry("write", op)

    def read_from(self, remote: str, offset: int, limit: int = 4 << 20) -> bytes | None:
        """Up to `limit` bytes of a remote file from `offset`; None when it does not exist."""

        def op() -> bytes | None:
            try:
                with self.sftp().open(remote, "rb") as f:
                    f.seek(offset)
                    return f.read(limit)
            except FileNotFoundError:
                return None

        return self.retry("read", op)


def _said(e: BaseException | None) -> str:
    """The error's text, with the joins paramiko leaves out ("Error reading SSH protocol
    banner[Errno 104] ..." reads "...banner: [Errno 104] ...")."""
    return re.sub(r"(?<=\S)\[Errno", ": [Errno", str(e))
