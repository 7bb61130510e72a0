"""`google.colab.drive`: My Drive of the Drive emulator under `<mountpoint>/MyDrive`.

Colab's real mount is a FUSE file system with a local cache that syncs with Drive in the
background (seconds to minutes late); `flush_and_unmount` forces the last sync. This stand-in does
the same with a two-way mirror over Drive's v2 REST API (COLAB_SIM_DRIVE_URL, a token from
COLAB_SIM_TOKEN_URL), every COLAB_SIM_SYNC_S seconds:

- push: new or changed local files are uploaded (new content for a known file id, else a new file
  in its folder, folders created as needed); known files deleted locally are trashed;
- pull: files new or changed in Drive (and unchanged here since the last round) are downloaded,
  atomically; files gone from Drive are removed here.

Local changes win a conflict. Hidden names (".x.tmp", a writer's temporary) are not synced.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

FOLDER = "application/vnd.google-apps.folder"
_mounted: list[Mirror] = []


class _Api:
    def __init__(self, url: str, token_url: str) -> None:
        self.url, self.token_url = url.rstrip("/"), token_url
        self.token = ""

    def _fresh_token(self) -> None:
        with urllib.request.urlopen(self.token_url, timeout=30) as r:
            self.token = r.read().decode().strip()

    def call(
        self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> bytes:
        for attempt in range(2):
            if not self.token:
                self._fresh_token()
            req = urllib.request.Request(self.url + path, data=body, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            if body is not None:
                req.add_header("Content-Type", ctype)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.read()
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 0:
                    self.token = ""
                    continue
                raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps(data).encode() if data is not None else None
        raw = self.call(method, path, body)
        return json.loads(raw) if raw else {}

    def children(self, folder: str) -> list[dict[str, Any]]:
        q = urllib.parse.quote(f"'{folder}' in parents and trashed = false")
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = f"&pageToken={urllib.parse.quote(token)}" if token else ""
            got = self.json("GET", f"/drive/v2/files?q={q}&maxResults=1000{page}")
            items += got.get("items", [])
            token = str(got.get("nextPageToken") or "")
            if not token:
                return items

    def upload(self, parent: str, title: str, data: bytes) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        meta = json.dumps({"title": title, "parents": [{"id": parent}]}).encode()
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                meta,
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        raw = self.call(
            "POST",
            "/upload/drive/v2/files?uploadType=multipart",
            body,
            f"multipart/related; boundary={boundary}",
        )
        return json.loads(raw)

    def update(self, file_id: str, data: bytes) -> dict[str, Any]:
        path = f"/upload/drive/v2/files/{file_id}?uploadType=media"
        return json.loads(self.call("PUT", path, data, "application/octet-stream"))


@dataclass
class _Known:
    id: str
    modified: str  # Drive's modifiedDate when we last agreed
    local: tuple[int, int]  # (size, mtime_ns) of the local copy then


class Mirror:
    def __init__(self, api: _Api, local: str, interval: float) -> None:
        self.api, self.local, self.interval = api, local, interval
        self.root = str(api.json("GET", "/drive/v2/files/root")["id"])
        self.known: dict[str, _Known] = {}
        self.folders: dict[str, str] = {"": self.root}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="drive-mount")

    def _stat(self, rel: str) -> tuple[int, int] | None:
        try:
            st = os.stat(os.path.join(self.local, rel))
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def _folder(self, rel_dir: str) -> str:
        if rel_dir in self.folders:
            return self.folders[rel_dir]
        parent_rel, _, name = rel_dir.rpartition("/")
        parent = self._folder(parent_rel)
        found = [f for f in self.api.children(parent) if f.get("title") == name]
        found = [f for f in found if f.get("mimeType") == FOLDER]
        if found:
            fid = str(found[0]["id"])
        else:
            meta = {"title": name, "mimeType": FOLDER, "parents": [{"id": parent}]}
            fid = str(self.api.json("POST", "/drive/v2/files", meta)["id"])
        self.folders[rel_dir] = fid
        return fid

    def push(self) -> None:
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.local):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.local)
                now = self._stat(rel)
                if now is None:
                    continue
                seen.add(rel)
                known = self.known.get(rel)
                if known is not None and known.local == now:
                    continue
                with open(os.path.join(self.local, rel), "rb") as f:
                    data = f.read()
                meta = None
                if known is not None:
                    try:
                        meta = self.api.update(known.id, data)
                    except urllib.error.HTTPError as e:
                        if e.code != 404:
                            raise
                        del self.known[rel]  # deleted in Drive meanwhile: the local copy stays
                        continue
                else:
                    parent_rel = os.path.dirname(rel)
                    meta = self.api.upload(self._folder(parent_rel), name, data)
                self.known[rel] = _Known(str(meta["id"]), str(meta.get("modifiedDate")), now)
        for rel in [r for r in self.known if r not in seen]:
            try:
                self.api.call("POST", f"/drive/v2/files/{self.known[rel].id}/trash", b"")
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            del self.known[rel]

    def pull(self) -> None:
        remote: dict[str, dict[str, Any]] = {}
        pending = [("", self.root)]
        while pending:
            prefix, fid = pending.pop()
            for item in self.api.children(fid):
                rel = f"{prefix}{item['title']}"
                if item.get("mimeType") == FOLDER:
                    self.folders.setdefault(rel, str(item["id"]))
                    pending.append((f"{rel}/", str(item["id"])))
                else:
                    remote[rel] = item
        for rel, item in remote.items():
            known = self.known.get(rel)
            modified = str(item.get("modifiedDate"))
            if known is not None and (
                known.modified == modified or known.local != self._stat(rel)
            ):
                continue  # unchanged in Drive, or changed here (the next push sends it)
            data = self.api.call("GET", f"/drive/v2/files/{item['id']}?alt=media")
            path = os.path.join(self.local, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.mount")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            self.known[rel] = _Known(str(item["id"]), modified, self._stat(rel) or (0, 0))
        for rel in [r for r in self.known if r not in remote]:
            if self.known[rel].local == self._stat(rel):
                os.unlink(os.path.join(self.local, rel))
                del self.known[rel]

    def sync(self) -> None:
        with self.lock:
            self.push()
            self.pull()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.sync()
            except (OSError, urllib.error.URLError, ValueError) as e:
                print(f"drive mount: sync failed: {e}", flush=True)


def mount(mountpoint: str, force_remount: bool = False, timeout_ms: int = 120000) -> None:
    """Mount My Drive at `mountpoint`/MyDrive (the user consented when the sim opened us)."""
    if _mounted and not force_remount:
        print(
            f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, call "
            "drive.mount(..., force_remount=True)."
        )
        return
    api = _Api(os.environ["COLAB_SIM_DRIVE_URL"], os.environ["COLAB_SIM_TOKEN_URL"])
    local = os.path.join(mountpoint, "MyDrive")
    os.makedirs(local, exist_ok=True)
    mirror = Mirror(api, local, float(os.environ.get("COLAB_SIM_SYNC_S") or 1.0))
    mirror.pull()
    mirror.thread.start()
    _mounted.append(mirror)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms: int = 86400000) -> None:
    """Send what is written locally to Drive, then stop mirroring."""
    while _mounted:
        mirror = _mounted.pop()
        mirror.stop.set()
        mirror.thread.join(timeout=timeout_ms / 1000)
        mirror.sync()
