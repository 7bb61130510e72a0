"""Conformance: the real, unchanged pydrive2 (and pydrive2.fs) works against the Drive sim.

pydrive2 is pointed at the sim only through ``launcher.targets.colab.endpoint.point_pydrive2_at``
(reference §3.2); credentials come the ways a user's would: a saved oauth2client credentials file,
the consent flow, or a service-account key. Every request is real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from googleapiclient.http import MediaIoBaseUpload
from pydrive2.auth import GoogleAuth
from pydrive2.drive import GoogleDrive
from pydrive2.files import ApiRequestError
from pydrive2.fs import GDriveFileSystem

from launcher.sim.drive import DriveSim
from launcher.sim.drive.sim import COLAB_MIME, FOLDER_MIME
from tests.sim import drive_fixtures
from tests.sim.drive_fixtures import call, client_settings

sim = drive_fixtures.sim
pointed = drive_fixtures.pointed


def user_auth(sim: DriveSim, tmp_path: Path, creds: dict[str, Any] | None = None) -> GoogleAuth:
    """A GoogleAuth loaded from a saved-credentials file, as pydrive2 users keep one."""
    creds_file = tmp_path / "credentials.json"
    creds_file.write_text(json.dumps(creds or sim.user_credentials()))
    gauth = GoogleAuth(settings=client_settings(sim, creds_file))
    gauth.LoadCredentialsFile()
    return gauth


def test_folder_upload_list_download_update_trash_delete(
    pointed: DriveSim, tmp_path: Path
) -> None:
    gauth = user_auth(pointed, tmp_path)
    gauth.Authorize()
    drive = GoogleDrive(gauth)
    about = drive.GetAbout()
    folder = drive.CreateFile({"title": "launch-jobs", "mimeType": FOLDER_MIME,
                               "parents": [{"id": "root"}]})  # fmt: skip
    folder.Upload()
    assert folder["parents"][0] == {**folder["parents"][0], "id": about["rootFolderId"],
                                    "isRoot": True}  # fmt: skip
    payload = os.urandom(70_000)
    (tmp_path / "bundle.tar.gz").write_bytes(payload)
    f = drive.CreateFile({"title": "bundle.tar.gz", "parents": [{"id": folder["id"]}]})
    f.SetContentFile(str(tmp_path / "bundle.tar.gz"))
    f.Upload()
    assert f["fileSize"] == str(len(payload))
    assert f["md5Checksum"] == hashlib.md5(payload).hexdigest()
    nb = drive.CreateFile({"title": "run.ipynb", "mimeType": COLAB_MIME,
                           "parents": [{"id": folder["id"]}]})  # fmt: skip
    nb.SetContentString('{"cells": []}')
    nb.Upload()

    listed = drive.ListFile({"q": f"'{folder['id']}' in parents and trashed=false"}).GetList()
    assert [x["title"] for x in listed] == ["bundle.tar.gz", "run.ipynb"]
    only = drive.ListFile({"q": f"'{folder['id']}' in parents and mimeType = '{COLAB_MIME}'"})
    assert [x["id"] for x in only.GetList()] == [nb["id"]]

    fetched = drive.CreateFile({"id": f["id"]})
    fetched.GetContentFile(str(tmp_path / "out.bin"))
    out = (tmp_path / "out.bin").read_bytes()
    assert out == payload and hashlib.md5(out).hexdigest() == f["md5Checksum"]

    version = int(f["version"])
    fetched.SetContentString("a new bundle")
    fetched.Upload()  # an update: PUT /upload/drive/v2/files/{id}
    assert pointed.content(f["id"]) == b"a new bundle"
    again = drive.CreateFile({"id": f["id"]})
    assert again.GetContentString() == "a new bundle"  # FetchContent follows downloadUrl
    assert int(again["version"]) > version and again["fileSize"] == "12"

    again.Trash()
    assert [m.id for m in pointed.files(trashed=True)] == [f["id"]]
    assert [x["title"] for x in drive.ListFile(
        {"q": f"'{folder['id']}' in parents and trashed=false"}).GetList()] == ["run.ipynb"]  # fmt: skip
    again.UnTrash()
    assert pointed.files(trashed=True) == []
    again.Delete()
    assert f["id"] not in [m.id for m in pointed.files()]
    with pytest.raises(ApiRequestError) as err:
        drive.CreateFile({"id": f["id"]}).FetchMetadata()
    assert err.value.error["code"] == 404 and err.value.GetField("reason") == "notFound"


def test_a_resumable_upload_in_many_chunks_and_a_chunked_download(
    pointed: DriveSim, tmp_path: Path
) -> None:
    """pydrive2 sends 100 MB chunks; googleapiclient's own uploader with 256 KiB chunks makes
    the sim answer 308 + Range between chunks, through pydrive2's authorized service."""
    gauth = user_auth(pointed, tmp_path)
    gauth.Authorize()
    drive = GoogleDrive(gauth)
    payload = os.urandom(3 * 256 * 1024 + 1234)
    media = MediaIoBaseUpload(io.BytesIO(payload), "application/gzip", chunksize=256 * 1024,
                              resumable=True)  # fmt: skip
    request = drive.auth.service.files().insert(body={"title": "big.tar.gz"}, media_body=media)
    progress: list[int] = []
    response = None
    while response is None:
        status, response = request.next_chunk()
        if status is not None:
            progress.append(status.resumable_progress)
    assert progress == [256 * 1024, 512 * 1024, 768 * 1024]
    assert response["md5Checksum"] == hashlib.md5(payload).hexdigest()
    assert pointed.content(response["id"]) == payload
    chunk_puts = [c for c in pointed.calls if c == "PUT /upload/drive/v2/files"]
    assert len(chunk_puts) == 4

    before = len(pointed.calls)
    drive.CreateFile({"id": response["id"]}).GetContentFile(
        str(tmp_path / "big.out"), chunksize=300 * 1024
    )
    assert (tmp_path / "big.out").read_bytes() == payload
    assert pointed.calls[before:].count(f"GET /drive/v2/files/{response['id']}") == 3


def test_pydrive2_fs_operations(pointed: DriveSim, tmp_path: Path) -> None:
    gauth = user_auth(pointed, tmp_path)
    gauth.Authorize()
    fs = GDriveFileSystem("root", google_auth=gauth)
    job = "root/launch-jobs/job-42"
    fs.pipe_file(f"{job}/heartbeat.txt", b"beat 1")
    with fs.open(f"{job}/ckpt/model.bin", "wb") as w:
        w.write(b"\x00" * 5000)
    assert fs.ls(job) == [f"{job}/heartbeat.txt", f"{job}/ckpt/"]
    assert sorted(fs.find("root/launch-jobs")) == [f"{job}/ckpt/model.bin", f"{job}/heartbeat.txt"]
    assert fs.cat_file(f"{job}/heartbeat.txt") == b"beat 1"
    fs.get_file(f"{job}/ckpt/model.bin", str(tmp_path / "model.bin"))
    assert (tmp_path / "model.bin").read_bytes() == b"\x00" * 5000
    info = fs.info(f"{job}/ckpt/model.bin")
    assert info["size"] == 5000 and isinstance(info["size"], int)
    assert info["checksum"] == hashlib.md5(b"\x00" * 5000).hexdigest()
    assert fs.info(f"{job}/ckpt")["type"] == "directory"
    fs.rm_file(f"{job}/heartbeat.txt")  # trashes (trash_only=True)
    assert not fs.exists(f"{job}/heartbeat.txt") and fs.exists(f"{job}/ckpt/model.bin")
    assert [m.title for m in pointed.files(trashed=True)] == ["heartbeat.txt"]
    # one folder per path element, made implicitly by the first upload into it
    assert sorted(m.title for m in pointed.files() if m.mime_type == FOLDER_MIME) == [
        "ckpt", "job-42", "launch-jobs"]  # fmt: skip


def test_an_expired_access_token_is_refreshed_through_the_token_endpoint(
    pointed: DriveSim, tmp_path: Path
) -> None:
    creds = pointed.user_credentials()
    creds.update(access_token="ya29.long-gone", token_expiry="2020-01-01T00:00:00Z")
    gauth = user_auth(pointed, tmp_path, creds)
    assert gauth.access_token_expired
    drive = GoogleDrive(gauth)
    assert drive.GetAbout()["user"]["emailAddress"] == "alice@example.com"  # LoadAuth refreshes
    assert "POST /token" in pointed.calls
    saved = json.loads((tmp_path / "credentials.json").read_text())
    assert saved["access_token"] not in ("ya29.long-gone", creds["access_token"])

    # the sim ends the token early: the API answers 401 and oauth2client refreshes on its own
    pointed.expire_access_tokens()
    refreshes = pointed.calls.count("POST /token")
    assert drive.ListFile({"q": "trashed=false"}).GetList() == []
    assert pointed.calls.count("POST /token") == refreshes + 1


def test_the_consent_flow_gives_pydrive2_working_credentials(
    pointed: DriveSim, tmp_path: Path
) -> None:
    """What an installed-app login does: the browser visits the auth URL, the redirect carries
    the code, pydrive2 exchanges it at /token and saves the credentials."""
    gauth = GoogleAuth(settings=client_settings(pointed, tmp_path / "saved.json"))
    url = gauth.GetAuthUrl()
    assert url.startswith(f"{pointed.url}/o/oauth2/auth?")
    status, headers, _ = call(pointed, "GET", url, token=None)
    assert status == 302 and headers["location"].startswith("http://localhost:8080/?code=")
    code = parse_qs(urlsplit(headers["location"]).query)["code"][0]  # as ClientRedirectHandler
    gauth.Auth(code)
    gauth.SaveCredentials()
    drive = GoogleDrive(gauth)
    folder = drive.CreateFile({"title": "from-consent", "mimeType": FOLDER_MIME})
    folder.Upload()
    assert [m.owner for m in pointed.files()] == ["alice@example.com"]
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert saved["refresh_token"] and saved["token_uri"] == f"{pointed.url}/token"


def test_a_service_account_cannot_upload_into_my_drive(pointed: DriveSim) -> None:
    gauth = GoogleAuth(settings={
        "client_config_backend": "service",
        "service_config": {"client_json_dict": pointed.service_account_key()},
        "oauth_scope": ["https://www.googleapis.com/auth/drive"],
    })  # fmt: skip
    gauth.ServiceAuth()  # the JWT-bearer grant, signed with the key's RSA key
    drive = GoogleDrive(gauth)
    email = drive.GetAbout()["user"]["emailAddress"]
    assert email.endswith("@launch-sim.iam.gserviceaccount.com")
    f = drive.CreateFile({"title": "bundle.tar.gz"})
    f.SetContentString("x")
    with pytest.raises(ApiRequestError) as err:
        f.Upload()
    assert err.value.error["code"] == 403
    assert err.value.GetField("reason") == "storageQuotaExceeded"
    assert "Service Accounts do not have storage quota" in err.value.error["message"]
    folder = drive.CreateFile({"title": "jobs", "mimeType": FOLDER_MIME})
    with pytest.raises(ApiRequestError) as err:
        folder.Upload()
    assert err.value.GetField("reason") == "storageQuotaExceeded"
    assert pointed.files() == []


def test_an_injected_rate_limit_is_retried_by_pydrive2_fs(
    pointed: DriveSim, tmp_path: Path
) -> None:
    gauth = user_auth(pointed, tmp_path)
    gauth.Authorize()
    fs = GDriveFileSystem("root", google_auth=gauth)
    fs.pipe_file("root/jobs/a.txt", b"a")

    # plain pydrive2 does not retry: the fault is real
    pointed.faults.add(403, "rateLimitExceeded", method="GET", path_contains="in parents")
    with pytest.raises(ApiRequestError) as err:
        GoogleDrive(gauth).ListFile({"q": "'root' in parents"}).GetList()
    assert err.value.GetField("reason") == "rateLimitExceeded"
    assert err.value.GetField("domain") == "usageLimits"

    pointed.faults.add(403, "rateLimitExceeded", method="GET", path_contains="in parents")
    before = len(pointed.calls)
    assert fs.ls("root/jobs") == ["root/jobs/a.txt"]
    lists = [c for c in pointed.calls[before:] if c == "GET /drive/v2/files"]
    assert len(lists) == 2  # the refused one and its retry
