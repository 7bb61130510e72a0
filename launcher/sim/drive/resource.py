"""Drive v2 JSON resources (``drive#file``, ``drive#about``) and the ``fields`` selector.

v2 writes int64 values (``fileSize``, ``quotaBytesUsed``, ``version``) as strings, and
pydrive2.fs relies on that (it calls ``int()`` on them). Dates are RFC 3339 with milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from launcher.sim.drive.store import DriveError, FileMeta

JSON = dict[str, Any]
QUOTA_BYTES = 15 * 1024**3  # a free account's 15 GB


def rfc3339(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _user(email: str, *, me: bool) -> JSON:
    name = email.split("@", 1)[0]
    return {
        "kind": "drive#user",
        "displayName": name,
        "emailAddress": email,
        "isAuthenticatedUser": me,
        "permissionId": str(int(hashlib.md5(email.lower().encode()).hexdigest()[:15], 16)),
    }


def file_resource(meta: FileMeta, base_url: str, *, viewer: str, root_id: str) -> JSON:
    api = f"{base_url}/drive/v2"
    res: JSON = {
        "kind": "drive#file",
        "id": meta.id,
        "etag": f'"{meta.version}"',
        "selfLink": f"{api}/files/{meta.id}",
        "alternateLink": (
            f"{base_url}/drive/folders/{meta.id}"
            if meta.is_folder
            else f"{base_url}/file/d/{meta.id}/view"
        ),
        "title": meta.title,
        "mimeType": meta.mime_type,
        "description": meta.description,
        "labels": {
            "starred": False,
            "hidden": False,
            "trashed": meta.trashed,
            "restricted": False,
            "viewed": True,
        },
        "explicitlyTrashed": meta.explicitly_trashed,
        "createdDate": rfc3339(meta.created),
        "modifiedDate": rfc3339(meta.modified),
        "modifiedByMeDate": rfc3339(meta.modified),
        "lastViewedByMeDate": rfc3339(meta.modified),
        "markedViewedByMeDate": "1970-01-01T00:00:00.000Z",
        "version": str(meta.version),
        "parents": [
            {
                "kind": "drive#parentReference",
                "id": pid,
                "selfLink": f"{api}/files/{meta.id}/parents/{pid}",
                "parentLink": f"{api}/files/{pid}",
                "isRoot": pid == root_id,
            }
            for pid in meta.parents
        ],
        "ownerNames": [meta.owner.split("@", 1)[0]],
        "owners": [_user(meta.owner, me=meta.owner.lower() == viewer.lower())],
        "lastModifyingUserName": meta.owner.split("@", 1)[0],
        "lastModifyingUser": _user(meta.owner, me=meta.owner.lower() == viewer.lower()),
        "editable": True,
        "copyable": not meta.is_folder,
        "writersCanShare": True,
        "shared": False,
        "appDataContents": False,
        "spaces": ["drive"],
        "quotaBytesUsed": str(meta.size or 0),
    }
    if meta.size is not None:
        extension = meta.title.rsplit(".", 1)[1] if "." in meta.title else ""
        res.update(
            downloadUrl=f"{api}/files/{meta.id}?alt=media",
            webContentLink=f"{base_url}/uc?id={meta.id}&export=download",
            originalFilename=meta.title,
            fileExtension=extension,
            fullFileExtension=extension,
            md5Checksum=meta.md5,
            fileSize=str(meta.size),
            headRevisionId=f"0B{meta.version}",
        )
    return res


def about_resource(email: str, *, root_id: str, used: int, service: bool) -> JSON:
    total = 0 if service else QUOTA_BYTES  # service accounts have no storage quota
    return {
        "kind": "drive#about",
        "name": email.split("@", 1)[0],
        "user": _user(email, me=True),
        "rootFolderId": root_id,
        "permissionId": _user(email, me=True)["permissionId"],
        "quotaType": "LIMITED",
        "quotaBytesTotal": str(total),
        "quotaBytesUsed": str(used),
        "quotaBytesUsedAggregate": str(used),
        "quotaBytesUsedInTrash": "0",
        "largestChangeId": "1",
        "remainingChangeIds": "0",
        "languageCode": "en",
        "isCurrentAppInstalled": False,
        "maxUploadSizes": [{"type": "*", "size": "5242880000000"}],
    }


# -- fields=... (partial responses) ---------------------------------------------------------

Selection = dict[str, "Selection | None"]  # name -> sub-selection (None: the whole value)
_FIELD_TOKEN = re.compile(r"\s*([A-Za-z0-9_*]+|[(),/])")


def parse_fields(text: str) -> Selection | None:
    """``"items(id,title),nextPageToken"`` or ``"labels/trashed"``; None selects everything."""
    if not text.strip() or text.strip() == "*":
        return None
    tokens = _FIELD_TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise _bad_fields(text)
    sel, rest = _selection(tokens, text)
    if rest:
        raise _bad_fields(text)
    return sel


def _selection(tokens: list[str], text: str) -> tuple[Selection, list[str]]:
    sel: Selection = {}
    while tokens:
        path: list[str] = []
        while True:
            if not tokens or tokens[0] in "(),/":
                raise _bad_fields(text)
            path.append(tokens.pop(0))
            if tokens and tokens[0] == "/":
                tokens.pop(0)
                continue
            break
        sub: Selection | None = None
        if tokens and tokens[0] == "(":
            sub, tokens = _selection(tokens[1:], text)
            if not tokens or tokens[0] != ")":
                raise _bad_fields(text)
            tokens = tokens[1:]
        for name in reversed(path[1:]):
            sub = {name: sub}
        _merge(sel, path[0], sub)
        if tokens and tokens[0] == ",":
            tokens = tokens[1:]
            continue
        return sel, tokens
    return sel, tokens


def _merge(sel: Selection, name: str, sub: Selection | None) -> None:
    if name not in sel:
        sel[name] = sub
        return
    have = sel[name]
    if have is None or sub is None:
        sel[name] = None
        return
    for k, v in sub.items():
        _merge(have, k, v)


def select(value: Any, sel: Selection | None) -> Any:
    """``value`` reduced to ``sel``; lists apply the selection to each element."""
    if sel is None or "*" in sel:
        return value
    if isinstance(value, list):
        return [select(v, sel) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(value, dict):
        return value
    fields: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
    return {k: select(fields[k], sub) for k, sub in sel.items() if k in fields}


def _bad_fields(text: str) -> DriveError:
    return DriveError(400, "invalidParameter", f"Invalid field selection {text}",
                      location="fields")  # fmt: skip
