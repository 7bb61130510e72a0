"""The Drive sim's own behaviour: the q parser, fields, Range, resumable chunks, faults, OAuth
and the service-account refusal, over raw HTTP (what pydrive2 does not exercise on its own)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from launcher.sim.drive import DriveSim
from launcher.sim.drive.query import And, Compare, InParents, Not, Or, QueryError, matches, parse
from launcher.sim.drive.resource import parse_fields, select
from launcher.sim.drive.sim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FOLDER_MIME
from launcher.sim.drive.store import FileMeta
from tests.sim import drive_fixtures
from tests.sim.drive_fixtures import call, call_json, reason

sim = drive_fixtures.sim
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def upload(sim: DriveSim, data: bytes, title: str = "f.bin", parent: str = "root",
           token: str = "") -> dict[str, Any]:  # fmt: skip
    """A multipart upload, as googleapiclient sends one."""
    meta = json.dumps({"title": title, "parents": [{"id": parent}]}).encode()
    body = (b"--XX\r\nContent-Type: application/json\r\n\r\n" + meta + b"\r\n--XX\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--XX--")  # fmt: skip
    status, answer = call_json(
        sim, "POST", "/upload/drive/v2/files?uploadType=multipart", body, token=token,
        headers={"Content-Type": 'multipart/related; boundary="XX"'},
    )  # fmt: skip
    assert status == 200, answer
    return answer


def folder(sim: DriveSim, title: str, parent: str = "root", token: str = "") -> str:
    status, answer = call_json(sim, "POST", "/drive/v2/files", token=token, body={
        "title": title, "mimeType": FOLDER_MIME, "parents": [{"id": parent}]})  # fmt: skip
    assert status == 200, answer
    return str(answer["id"])


def titles(sim: DriveSim, q: str, **extra: str) -> list[str]:
    status, answer = call_json(sim, "GET", "/drive/v2/files?" + urlencode({"q": q, **extra}))
    assert status == 200, answer
    return [i["title"] for i in answer["items"]]


# -- the q parser ---------------------------------------------------------------------------


def item(title: str = "HelloWorld.txt", **kw: Any) -> FileMeta:
    base: dict[str, Any] = {"id": "1x", "mime_type": "text/plain", "parents": ["P1"],
                            "owner": "alice@example.com"}  # fmt: skip
    return FileMeta(title=title, **{**base, **kw})


def test_the_parser_reads_what_pydrive2_fs_sends() -> None:
    q = "trashed=false and ('a' in parents or 'b' in parents) and title='it\\'s'"
    assert parse(q) == And(
        And(Compare("trashed", "=", False), Or(InParents("a"), InParents("b"))),
        Compare("title", "=", "it's"),
    )


def test_and_binds_tighter_than_or_and_not_applies_to_one_term() -> None:
    assert parse("'a' in parents or 'b' in parents and not trashed = true") == Or(
        InParents("a"), And(InParents("b"), Not(Compare("trashed", "=", True)))
    )


@pytest.mark.parametrize(
    "q",
    ["title = 'open", "owner = 'x'", "title = true", "trashed = 'yes'", "'a' in folders",
     "(title = 'a'", "title = 'a' and", "title ~ 'a'", "fullText = 'a'",
     "modifiedDate > 'yesterday'"],
)  # fmt: skip
def test_bad_queries_are_refused(q: str) -> None:
    with pytest.raises(QueryError):
        parse(q)


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("title = 'helloworld.txt'", True),  # Drive ignores case
        ("title != 'HelloWorld.txt'", False),
        ("title contains 'Hello'", True),
        ("title contains 'World'", False),  # a prefix of the title or of a word, as Drive
        ("title contains 'txt'", True),
        ("mimeType = 'text/plain' and not mimeType != 'text/plain'", True),
        ("'P1' in parents and trashed = false", True),
        ("'root' in parents", True),  # the alias
        ("'me' in owners", True),
        ("fullText contains 'world'", True),
        ("modifiedDate > '2000-01-01T00:00:00Z' and createdDate < '2999-01-01T00:00:00Z'", True),
        ("not ('P1' in parents or title = 'x')", False),
    ],
)
def test_queries_match_like_drive(q: str, found: bool) -> None:
    assert matches(parse(q), item(), root_id="P1", viewer="alice@example.com") is found


def test_fields_select_nested_values() -> None:
    doc = {"items": [{"id": "1", "title": "a", "labels": {"trashed": False, "starred": False}}],
           "nextPageToken": "t", "kind": "drive#fileList"}  # fmt: skip
    sel = parse_fields("items(id,labels/trashed),nextPageToken")
    assert select(doc, sel) == {"items": [{"id": "1", "labels": {"trashed": False}}],
                                "nextPageToken": "t"}  # fmt: skip
    assert select(doc, parse_fields("*")) == doc


# -- files over HTTP ------------------------------------------------------------------------


def test_a_file_resource_has_the_v2_shape(sim: DriveSim) -> None:
    f = upload(sim, b"hello")
    status, got = call_json(sim, "GET", f"/drive/v2/files/{f['id']}")
    assert status == 200
    assert got["kind"] == "drive#file" and got["fileSize"] == "5"
    assert got["md5Checksum"] == hashlib.md5(b"hello").hexdigest()
    assert got["downloadUrl"] == f"{sim.url}/drive/v2/files/{f['id']}?alt=media"
    assert got["parents"][0]["isRoot"] is True and got["labels"]["trashed"] is False
    assert datetime.strptime(got["modifiedDate"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert (
        got["modifiedDate"][-5] == "." and got["owners"][0]["emailAddress"] == "alice@example.com"
    )
    status, got = call_json(sim, "GET", f"/drive/v2/files/{folder(sim, 'd')}?fields=id,fileSize")
    assert status == 200 and set(got) == {"id"}  # folders have no size
    status, got = call_json(sim, "GET", "/drive/v2/files/nope")
    assert status == 404 and got["error"]["code"] == 404 and reason(got) == "notFound"


def test_range_downloads(sim: DriveSim) -> None:
    fid = upload(sim, b"0123456789")["id"]
    path = f"/drive/v2/files/{fid}?alt=media"
    assert call(sim, "GET", path)[::2] == (200, b"0123456789")
    status, headers, data = call(sim, "GET", path, headers={"Range": "bytes=2-5"})
    assert (status, headers["content-range"], data) == (206, "bytes 2-5/10", b"2345")
    status, headers, data = call(sim, "GET", path, headers={"Range": "bytes=7-100"})
    assert (status, headers["content-range"], data) == (206, "bytes 7-9/10", b"789")
    assert call(sim, "GET", path, headers={"Range": "bytes=-3"})[2] == b"789"
    status, headers, _ = call(sim, "GET", path, headers={"Range": "bytes=10-"})
    assert (status, headers["content-range"]) == (416, "bytes */10")
    empty = upload(sim, b"", title="empty")["id"]
    status, headers, _ = call(sim, "GET", f"/drive/v2/files/{empty}?alt=media",
                              headers={"Range": "bytes=0-99"})  # fmt: skip
    assert (status, headers["content-range"]) == (416, "bytes */0")  # googleapiclient's "done"
    status, got = call_json(sim, "GET", f"/drive/v2/files/{folder(sim, 'd')}?alt=media")
    assert status == 403 and reason(got) == "fileNotDownloadable"


def test_resumable_chunks_status_queries_retries_and_gaps(sim: DriveSim) -> None:
    token = sim.access_token()
    status, headers, _ = call(sim, "POST", "/upload/drive/v2/files?uploadType=resumable",
                              {"title": "r.bin"}, token=token,
                              headers={"X-Upload-Content-Length": "10"})  # fmt: skip
    assert status == 200
    session = headers["location"]
    assert session.startswith(f"{sim.url}/upload/drive/v2/files?uploadType=resumable&upload_id=")

    def put(data: bytes, rng: str) -> tuple[int, dict[str, str], bytes]:
        return call(sim, "PUT", session, data, token=None, headers={"Content-Range": rng})

    status, headers, _ = put(b"0123", "bytes 0-3/10")
    assert (status, headers["range"]) == (308, "bytes=0-3")
    status, headers, _ = put(b"", "bytes */10")  # "how much arrived?"
    assert (status, headers["range"]) == (308, "bytes=0-3")
    status, headers, _ = put(b"2345", "bytes 2-5/10")  # a retry overlapping what arrived
    assert (status, headers["range"]) == (308, "bytes=0-5")
    status, _, body = put(b"89", "bytes 8-9/10")  # a gap
    assert status == 400 and reason(json.loads(body)) == "badRequest"
    status, _, body = put(b"6789", "bytes 6-9/12")  # a different size than announced
    assert status == 400
    assert [f.title for f in sim.files()] == []
    status, _, body = put(b"6789", "bytes 6-9/10")
    done = json.loads(body)
    assert status == 200 and done["fileSize"] == "10"
    assert sim.content(done["id"]) == b"0123456789"
    assert json.loads(put(b"", "bytes */10")[2])["id"] == done["id"]  # asking again: done


def test_a_resumable_upload_of_unknown_size_and_an_update(sim: DriveSim) -> None:
    status, headers, _ = call(sim, "POST", "/upload/drive/v2/files?uploadType=resumable", b"")
    session = headers["location"]
    assert call(sim, "PUT", session, b"abc", token=None,
                headers={"Content-Range": "bytes 0-2/*"})[0] == 308  # fmt: skip
    status, _, body = call(sim, "PUT", session, b"de", token=None,
                           headers={"Content-Range": "bytes 3-4/5"})  # fmt: skip
    created = json.loads(body)
    assert status == 200 and created["title"] == "Untitled"
    assert created["mimeType"] == "application/octet-stream"
    status, headers, _ = call(sim, "PUT", f"/upload/drive/v2/files/{created['id']}"
                              "?uploadType=resumable", {"title": "renamed"})  # fmt: skip
    status, _, body = call(sim, "PUT", headers["location"], b"new", token=None,
                           headers={"Content-Range": "bytes 0-2/3"})  # fmt: skip
    updated = json.loads(body)
    assert (updated["id"], updated["title"], updated["fileSize"]) == (
        created["id"],
        "renamed",
        "3",
    )
    assert int(updated["version"]) > int(created["version"])
    status, _, body = call(sim, "PUT", f"/upload/drive/v2/files/{created['id']}?uploadType=media",
                           b"plain", headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 200 and sim.content(created["id"]) == b"plain"


def test_metadata_updates_listing_pages_trash_and_delete(sim: DriveSim) -> None:
    jobs = folder(sim, "jobs")
    sub = folder(sim, "sub", jobs)
    ids = [upload(sim, b"x", f"f{i}", jobs)["id"] for i in range(5)]
    inner = upload(sim, b"y", "inner", sub)["id"]
    page1 = call_json(sim, "GET", "/drive/v2/files?" + urlencode(
        {"q": f"'{jobs}' in parents", "maxResults": 4}))[1]  # fmt: skip
    page2 = call_json(sim, "GET", "/drive/v2/files?" + urlencode(
        {"q": f"'{jobs}' in parents", "maxResults": 4, "pageToken": page1["nextPageToken"]}))[1]  # fmt: skip
    assert [i["title"] for i in page1["items"] + page2["items"]] == [
        "sub", "f0", "f1", "f2", "f3", "f4"]  # fmt: skip
    assert "nextPageToken" not in page2
    assert call_json(sim, "GET", "/drive/v2/files?pageToken=bogus")[0] == 400
    assert call_json(sim, "GET", "/drive/v2/files?q=" + "title%20~%20'x'")[0] == 400

    status, moved = call_json(sim, "PATCH", f"/drive/v2/files/{ids[0]}?addParents={sub}"
                              f"&removeParents={jobs}", {"title": "moved", "description": "d"})  # fmt: skip
    assert status == 200 and moved["parents"][0]["id"] == sub and moved["description"] == "d"
    assert call_json(sim, "PUT", f"/drive/v2/files/{sub}", {"parents": [{"id": sub}]})[0] == 400

    assert call_json(sim, "POST", f"/drive/v2/files/{sub}/trash")[1]["labels"]["trashed"] is True
    # what is inside a trashed folder is trashed too; only q says whether to hide it
    assert titles(sim, f"'{sub}' in parents") == ["moved", "inner"]
    assert titles(sim, f"'{sub}' in parents and trashed = false") == []
    assert (
        call_json(sim, "POST", f"/drive/v2/files/{sub}/untrash")[1]["labels"]["trashed"] is False
    )
    assert titles(sim, f"'{sub}' in parents and trashed = false") == ["moved", "inner"]

    status, _, body = call(sim, "DELETE", f"/drive/v2/files/{jobs}")
    assert (status, body) == (204, b"")
    assert sim.files() == [] and not any((sim.data_dir / "blobs").iterdir())
    assert call_json(sim, "GET", f"/drive/v2/files/{inner}")[0] == 404


def test_many_concurrent_uploads_and_downloads(sim: DriveSim) -> None:
    errors: list[BaseException] = []
    made: dict[str, bytes] = {}

    def work(n: int) -> None:
        try:
            data = bytes([n]) * (50_000 + n)
            f = upload(sim, data, f"c{n}")
            made[f["id"]] = data
            assert call(sim, "GET", f"/drive/v2/files/{f['id']}?alt=media")[2] == data
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(made) == 24
    assert {f.id: f.md5 for f in sim.files()} == {
        k: hashlib.md5(v).hexdigest() for k, v in made.items()}  # fmt: skip


# -- faults ---------------------------------------------------------------------------------


def test_faults_answer_in_drive_error_shape_and_match_method_path_and_count(sim: DriveSim) -> None:
    sim.faults.add(403, "userRateLimitExceeded", method="GET", path_contains="/about", count=2)
    sim.faults.add(500, "backendError", method="POST")
    assert call_json(sim, "GET", "/drive/v2/files")[0] == 200  # another path
    for _ in range(2):
        status, got = call_json(sim, "GET", "/drive/v2/about")
        assert status == 403 and got["error"]["code"] == 403
        assert got["error"]["errors"][0] == {"domain": "usageLimits",
                                             "reason": "userRateLimitExceeded",
                                             "message": "User Rate Limit Exceeded"}  # fmt: skip
    assert call_json(sim, "GET", "/drive/v2/about")[0] == 200
    status, got = call_json(sim, "POST", "/drive/v2/files", {"title": "x"})
    assert status == 500 and got["error"]["errors"][0]["domain"] == "global"
    assert sim.files() == []
    # other processes add faults over HTTP
    fault = {"status": 503, "reason": "backendError", "path_contains": "/files"}
    assert call_json(sim, "POST", "/_sim/faults", fault, token=None)[0] == 200
    assert call_json(sim, "GET", "/drive/v2/files")[0] == 503
    assert call_json(sim, "POST", "/_sim/faults", {"status": 200}, token=None)[0] == 400


# -- OAuth ----------------------------------------------------------------------------------


def consent(sim: DriveSim, **params: str) -> tuple[int, dict[str, str]]:
    query = {"client_id": DEFAULT_CLIENT_ID, "redirect_uri": "http://localhost:9/cb",
             "response_type": "code", "state": "s1", "scope": "drive", **params}  # fmt: skip
    status, headers, _ = call(sim, "GET", "/o/oauth2/auth?" + urlencode(query), token=None)
    return status, headers


def token(sim: DriveSim, **form: str) -> tuple[int, Any]:
    return call_json(sim, "POST", "/token", urlencode(form).encode(), token=None, headers=FORM)


def test_requests_without_a_valid_token_get_401(sim: DriveSim) -> None:
    for bearer in (None, "ya29.unknown"):
        status, got = call_json(sim, "GET", "/drive/v2/about", token=bearer)
        assert status == 401 and reason(got) == "authError"
    old = sim.access_token()
    sim.expire_access_tokens()
    assert call_json(sim, "GET", "/drive/v2/about", token=old)[0] == 401


def test_consent_codes_and_refresh_tokens(sim: DriveSim) -> None:
    status, headers = consent(sim)
    assert status == 302
    target = urlsplit(headers["location"])
    assert (target.netloc, target.path) == ("localhost:9", "/cb")
    query = parse_qs(target.query)
    assert query["state"] == ["s1"]
    client = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET}
    exchange = dict(client, grant_type="authorization_code", code=query["code"][0],
                    redirect_uri="http://localhost:9/cb")  # fmt: skip
    status, got = token(sim, **exchange)
    assert status == 200 and got["token_type"] == "Bearer" and got["expires_in"] > 3000
    assert set(got) >= {"access_token", "refresh_token", "expires_in", "scope"}
    assert token(sim, **exchange)[1]["error"] == "invalid_grant"  # a code works once
    status, fresh = token(sim, **client, grant_type="refresh_token",
                          refresh_token=got["refresh_token"])  # fmt: skip
    assert status == 200
    about = call_json(sim, "GET", "/drive/v2/about", token=fresh["access_token"])[1]
    assert about["user"]["emailAddress"] == "alice@example.com"
    status, bad = token(sim, **dict(client, client_secret="wrong"), grant_type="refresh_token",
                        refresh_token=got["refresh_token"])  # fmt: skip
    assert (status, bad["error"]) == (401, "invalid_client")
    status, bad = token(sim, **client, grant_type="refresh_token", refresh_token="1//forged")
    assert (status, bad["error"]) == (400, "invalid_grant")

    status, _, page = call(sim, "GET", "/o/oauth2/auth?client_id=someone-else&redirect_uri=x",
                           token=None)  # fmt: skip
    assert status == 400 and b"invalid_client" in page


def test_each_user_has_their_own_my_drive(sim: DriveSim) -> None:
    _, headers = consent(sim, login_hint="bob@example.com")
    code = parse_qs(urlsplit(headers["location"]).query)["code"][0]
    _, got = token(sim, grant_type="authorization_code", code=code,
                   redirect_uri="http://localhost:9/cb", client_id=DEFAULT_CLIENT_ID,
                   client_secret=DEFAULT_CLIENT_SECRET)  # fmt: skip
    bob = got["access_token"]
    alices = upload(sim, b"alice's")
    bobs = upload(sim, b"bob's", token=bob)
    assert bobs["owners"][0]["emailAddress"] == "bob@example.com"
    assert alices["parents"][0]["id"] != bobs["parents"][0]["id"]  # two different roots
    assert call_json(sim, "GET", f"/drive/v2/files/{alices['id']}", token=bob)[0] == 404
    assert [i["id"] for i in call_json(sim, "GET", "/drive/v2/files", token=bob)[1]["items"]] == [
        bobs["id"]]  # fmt: skip
    assert call_json(sim, "DELETE", f"/drive/v2/files/{alices['id']}", token=bob)[0] == 404


def _jwt(key: dict[str, Any], claims: dict[str, Any]) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64(
        json.dumps(claims).encode())  # fmt: skip
    private = serialization.load_pem_private_key(key["private_key"].encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return signing + "." + b64(private.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256()))


def test_service_accounts_get_tokens_but_no_storage(sim: DriveSim, tmp_path: Path) -> None:
    key, other = sim.service_account_key(), sim.service_account_key()
    now = int(time.time())
    claims = {"iss": key["client_email"], "aud": key["token_uri"], "iat": now, "exp": now + 3600,
              "scope": "https://www.googleapis.com/auth/drive"}  # fmt: skip
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    forged = _jwt(other, claims)  # signed with another account's key
    assert token(sim, grant_type=grant, assertion=forged)[1]["error"] == "invalid_grant"
    stale = dict(claims, iat=now - 7200, exp=now - 3600)
    assert token(sim, grant_type=grant, assertion=_jwt(key, stale))[0] == 400
    delegated = dict(claims, sub="alice@example.com")
    assert token(sim, grant_type=grant, assertion=_jwt(key, delegated))[0] == 401
    status, got = token(sim, grant_type=grant, assertion=_jwt(key, claims))
    assert status == 200
    sa = got["access_token"]
    about = call_json(sim, "GET", "/drive/v2/about", token=sa)[1]
    assert about["user"]["emailAddress"] == key["client_email"]
    assert about["quotaBytesTotal"] == "0"
    status, refused = call_json(sim, "POST", "/drive/v2/files", {"title": "d",
                                "mimeType": FOLDER_MIME}, token=sa)  # fmt: skip
    assert status == 403 and reason(refused) == "storageQuotaExceeded"
    assert refused["error"]["errors"][0]["domain"] == "usageLimits"
    assert "use OAuth delegation" in refused["error"]["message"]
    status, _, _ = call(sim, "POST", "/upload/drive/v2/files?uploadType=resumable", {},
                        token=sa)  # fmt: skip
    assert status == 403 and sim.files() == []


def test_user_credentials_are_what_pydrive2_saves(sim: DriveSim) -> None:
    creds = sim.user_credentials()
    assert creds["_module"] == "oauth2client.client" and creds["_class"] == "OAuth2Credentials"
    assert creds["token_uri"] == f"{sim.url}/token" and creds["invalid"] is False
    expiry = datetime.strptime(creds["token_expiry"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expiry - datetime.now(UTC) > timedelta(minutes=55)
    status, fresh = token(sim, grant_type="refresh_token", refresh_token=creds["refresh_token"],
                          client_id=creds["client_id"], client_secret=creds["client_secret"])  # fmt: skip
    assert status == 200 and fresh["access_token"] != creds["access_token"]


def test_contents_live_under_the_data_dir_and_a_temporary_one_is_removed(tmp_path: Path) -> None:
    with DriveSim(data_dir=tmp_path / "kept") as kept:
        fid = upload(kept, b"persisted")["id"]
    assert (tmp_path / "kept" / "blobs" / fid).read_bytes() == b"persisted"
    with DriveSim() as temp:
        upload(temp, b"gone")
        where = temp.data_dir
    assert not where.exists()
    with pytest.raises(ValueError, match="loopback"):
        DriveSim(host="0.0.0.0")
