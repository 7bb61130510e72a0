"""The one place that points pydrive2 at a Drive other than Google's (the Drive sim).

pydrive2 builds its service with ``build("drive", "v2", http=...)`` and no endpoint option
(reference §3.1), so the only hook that reaches every request, media uploads included, is the
``build`` it imported. ``client_options={"api_endpoint": ...}`` is not enough: googleapiclient
keeps ``https`` on upload URLs, which an ``http://`` emulator cannot answer (reference §3.2).
"""

from __future__ import annotations

import json
from typing import Any

from launcher import settings

ENV = "LAUNCH_DRIVE_URL"


def drive_url() -> str | None:
    """The Drive to use instead of Google's (``$LAUNCH_DRIVE_URL``, no trailing slash), or
    None for Google's."""
    return settings.url(ENV)


def point_pydrive2_at(root_url: str) -> None:
    """Make every GoogleAuth that authorizes from now on talk to ``root_url``.

    Replaces ``pydrive2.auth.build`` with one that reads googleapiclient's bundled Drive v2
    discovery document (no network) with its URLs moved to ``root_url``. Calling it again
    replaces the previous one, so it is idempotent. A GoogleAuth that already built its
    service keeps it: call this before ``Authorize``/``ServiceAuth``.
    """
    import pydrive2.auth  # pyright: ignore[reportMissingTypeStubs]
    from googleapiclient import (  # pyright: ignore[reportMissingTypeStubs]
        discovery,
        discovery_cache,
    )

    root = root_url.rstrip("/") + "/"
    static = discovery_cache.get_static_doc("drive", "v2")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if static is None:
        raise RuntimeError("googleapiclient has no bundled Drive v2 discovery document")
    doc: dict[str, Any] = json.loads(static)  # pyright: ignore[reportUnknownArgumentType]
    doc["rootUrl"] = root
    doc["baseUrl"] = root + doc["servicePath"]
    doc["batchPath"] = "batch/drive/v2"

    def build(service_name: str, version: str, *args: Any, http: Any = None, **kw: Any) -> Any:
        # pydrive2 calls build("drive", "v2", http=..., cache_discovery=False)
        if (service_name, version) != ("drive", "v2"):
            raise ValueError(f"this endpoint serves drive v2, not {service_name} {version}")
        return discovery.build_from_document(doc, http=http)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

    pydrive2.auth.build = build  # pyright: ignore[reportAttributeAccessIssue]
