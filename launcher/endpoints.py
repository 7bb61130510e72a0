"""What to say when a platform's endpoint does not answer.

A refused connection to this machine means nothing listens there, which no retry changes: an
emulator that is not running, or a wrong port. That fails at once, with the one command that
starts the emulators. Anywhere else a failure may pass, so callers retry first.
"""

from __future__ import annotations

import errno
import re
import urllib.parse

from launcher.errors import TargetError

_ERRNO = re.compile(r"\[Errno (-?\d+)\] ([^'\")\]]+)")


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def reason(e: BaseException) -> str:
    """The innermost OS-level reason (`Connection refused`), not a transport library's text
    (urllib3 wraps it in three objects' reprs)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    found = _ERRNO.search(str(e))
    if found:
        return found.group(2).strip()
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def nothing_listens(url: str, e: BaseException) -> bool:
    """A refused connection to this machine: retrying cannot help."""
    if not is_loopback(url):
        return False
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    found = _ERRNO.search(str(e))
    return found is not None and int(found.group(1)) == errno.ECONNREFUSED


def unreachable(
    what: str, url: str, setting: str, emulator: str, e: BaseException, doing: str = ""
) -> TargetError:
    """`cannot reach <what> at <url> (<doing>): <reason>`, with the fix: the emulators for a
    URL on this machine, the network or the setting otherwise."""
    if is_loopback(url):
        hint = (
            f"is the {emulator} emulator running? `launch sim up` starts every emulator, then "
            f'`eval "$(launch sim env)"` (or `launch sim serve {emulator}`); or unset {setting}'
        )
    else:
        hint = f"check the network, or {setting}"
    doing = f" ({doing})" if doing else ""
    return TargetError(f"cannot reach {what} at {url}{doing}: {reason(e)}", hint=hint)
