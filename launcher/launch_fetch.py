"""Fetch a job's inputs where they are needed: a URL or a Kaggle dataset, verified and cached.

The launcher uses it here (the local target downloads into a cache, then mounts), and every
bundle carries it beside the agent, which runs it on the machine itself before the workload
starts (a Vast instance, a Kaggle kernel, a Colab runtime fetch straight from the source). Hence
stdlib only and Python 3.8, and no side effects at import.

    fetch_all(items, input_dir, cache_dir, log) -> list[Fetched]    raises FetchError

An item is a dict (it travels in agent.json): {"name", "kind": "url", "url", "sha256"?,
"unpack"?}, {"name", "kind": "hf", "repo", "repo_type"?, "revision"?, "endpoint"?} or
{"name", "kind": "kaggle", "ref": "owner/slug", "version"?}. Each lands in the cache under a key
that names its content (the URL's sha256, or the dataset's version), so a second run that
needs the same input downloads nothing; `$LAUNCH_INPUT_DIR/<name>` is then a link to it.

Guarantees: a download goes to a `.part` file and resumes by HTTP Range after a dropped
connection; a URL with a sha256 is checked before it is used, a Kaggle archive by the CRC of
each member as it is unpacked; an entry enters the cache by one rename, so a half-done download
is never an input. Two fetches of the same key wait on one lock instead of both downloading.
Credentials come from the environment (KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY)
and are sent only to the Kaggle API, never to the host a download is redirected to.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # annotations only: this file also runs on Python 3.8
    from collections.abc import Callable, Mapping

    Log = Callable[[str], None]

KAGGLE_API = "https://api.kaggle.com"
HF_HUB = "https://huggingface.co"
CHUNK = 1 << 20
RETRIES = 5
RETRIED_STATUS = (429, 500, 502, 503, 504)  # busy or failing for now: asked again, with backoff
TIMEOUT_S = 60.0
_DONE = ".done.json"  # <entry>.done.json, written last: its presence means the entry is whole


class FetchError(Exception):
    """An input could not be fetched; the message names the input and says why."""


class Fetched:
    """One input as fetched: where it is, how many bytes came over the network for it."""

    def __init__(self, name: str, path: str, downloaded: int, cached: bool) -> None:
        self.name = name
        self.path = path
        self.downloaded = downloaded
        self.cached = cached


def fetch_all(
    items: list[dict[str, Any]],
    input_dir: str,
    cache_dir: str,
    log: Log,
    env: Mapping[str, str] | None = None,
) -> list[Fetched]:
    """Fetch every item into the cache and link `input_dir/<name>` to it. Credentials are
    read from `env` (default: this process's environment)."""
    os.makedirs(input_dir, exist_ok=True)
    done: list[Fetched] = []
    for item in items:
        got = fetch_one(item, cache_dir, log, env)
        link = os.path.join(input_dir, got.name)
        _replace_link(got.path, link)
        done.append(got)
    return done


def fetch_one(
    item: dict[str, Any], cache_dir: str, log: Log, env: Mapping[str, str] | None = None
) -> Fetched:
    env = os.environ if env is None else env
    name = str(item.get("name") or "input")
    kind = item.get("kind")
    if kind == "url":
        unpack = bool(item.get("unpack"))
        return _fetch_url(name, str(item["url"]), item.get("sha256"), unpack, cache_dir, log)
    if kind == "kaggle":
        api = str(item.get("api") or env.get("LAUNCH_KAGGLE_URL") or KAGGLE_API).rstrip("/")
        auth = kaggle_auth(env)
        version = item.get("version")
        return _fetch_kaggle(name, str(item["ref"]), version, api, auth, cache_dir, log)
    if kind == "hf":
        return _fetch_hf(name, item, env, cache_dir, log)
    raise FetchError(f"input '{name}': unknown kind {kind!r}")


def remote_size(item: dict[str, Any], env: Mapping[str, str], timeout: float = 5.0) -> int | None:
    """What fetching `item` would download, in bytes, asked quickly (a HEAD, or Kaggle's file
    list); None when the source does not say or does not answer in time."""
    try:
        if item.get("kind") == "url":
            req = urllib.request.Request(str(item["url"]), method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                return int(length) if length is not None else None
        if item.get("kind") == "hf":
            dataset = item.get("repo_type") == "dataset"
            kinds = "datasets" if dataset else "models"
            rev = urllib.parse.quote(str(item.get("revision") or "main"), safe="")
            url = f"{hf_endpoint(item, env)}/api/{kinds}/{item['repo']}/tree/{rev}?recursive=true"
            req = urllib.request.Request(url, headers=hf_headers(env))
            with _opener().open(req, timeout=timeout) as resp:
                listing = cast("list[dict[str, Any]]", json.loads(resp.read() or b"[]"))
            return sum(int(f.get("size") or 0) for f in listing if f.get("type") == "file")
        auth = kaggle_auth(env)
        if item.get("kind") != "kaggle" or auth is None:
            return None
        api = str(item.get("api") or env.get("LAUNCH_KAGGLE_URL") or KAGGLE_API).rstrip("/")
        owner, _, slug = str(item["ref"]).partition("/")
        req = urllib.request.Request(
            f"{api}/v1/datasets.DatasetApiService/ListDatasetFiles",
            data=json.dumps({"ownerSlug": owner, "datasetSlug": slug}).encode(),
            headers={"Content-Type": "application/json", "Authorization": auth},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = cast("dict[str, Any]", json.loads(resp.read() or b"{}"))
        files = cast("list[dict[str, Any]]", answer.get("datasetFiles") or [])
        return sum(int(f.get("totalBytes") or 0) for f in files) if files else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


# ---- URLs -----------------------------------------------------------------------------------


def url_file_name(url: str) -> str:
    """The file name a URL's content is stored under: its path's last part, decoded, reduced to
    safe characters (never a path: no separators, never "." or "..")."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(c if c.isalnum() or c in "._-+" else "_" for c in base).strip(".")
    return safe or "download"


def url_cache_key(url: str, sha256: str | None, unpack: bool = False) -> str:
    """By content when the spec gives it; else by the URL itself (the same URL, the same file)."""
    key = (
        "sha256-" + sha256.lower()
        if sha256
        else "u-" + hashlib.sha256(url.encode()).hexdigest()[:32]
    )
    # the file keeps its name inside the entry, so two names of one content are two entries
    return f"url/{key}/{'unpacked' if unpack else 'file-' + url_file_name(url)}"


def _fetch_url(
    name: str, url: str, sha256: str | None, unpack: bool, cache_dir: str, log: Log
) -> Fetched:
    entry = os.path.join(cache_dir, url_cache_key(url, sha256, unpack))
    with _Lock(entry, lambda: log(f"input '{name}': waiting for another fetch of it")):
        if _complete(entry):
            log(f"input '{name}': {_shown(url)} is cached ({entry})")
            return Fetched(name, entry, 0, True)
        fname = url_file_name(url)
        work = _fresh_work_dir(entry)
        part = entry + ".part"
        log(f"input '{name}': downloading {_shown(url)}")
        digest, size, sent = _download(name, url, {}, part)
        if sha256 and digest != sha256.lower():
            os.remove(part)
            raise FetchError(
                f"input '{name}': {_shown(url)} has sha256 {digest}, the job spec says "
                f"{sha256.lower()}; "
                "the file was not used (fix the sha256 in the spec, or the URL)"
            )
        if unpack:
            _unpack(name, part, fname, work)
            os.remove(part)
        else:
            os.replace(part, os.path.join(work, fname))
        _seal(work, entry, {"url": _shown(url), "sha256": digest, "size": size})
        log(f"input '{name}': {size} bytes, sha256 {digest}")
        return Fetched(name, entry, sent, False)


# ---- Kaggle datasets ------------------------------------------------------------------------


def kaggle_auth(env: Mapping[str, str]) -> str | None:
    """The Authorization header value from the environment, as the kaggle CLI reads it."""
    token = env.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        if os.path.isfile(os.path.expanduser(token)):
            with open(os.path.expanduser(token), encoding="utf-8") as f:
                token = f.read().strip()
        return "Bearer " + token
    user, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
    if user and key:
        return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()
    return None


def kaggle_version(ref: str, api: str, auth: str, name: str) -> int:
    """The dataset's current version number (GetDataset)."""
    owner, _, slug = ref.partition("/")
    body = {"ownerSlug": owner, "datasetSlug": slug}
    answer = _rpc(f"{api}/v1/datasets.DatasetApiService/GetDataset", body, auth, name, ref)
    version = answer.get("currentVersionNumber")
    if not isinstance(version, int):
        raise FetchError(f"input '{name}': Kaggle gives no current version of {ref}")
    return version


def _fetch_kaggle(
    name: str, ref: str, version: int | None, api: str, auth: str | None, cache_dir: str, log: Log
) -> Fetched:
    if auth is None:
        raise FetchError(
            f"input '{name}': downloading Kaggle dataset {ref} needs Kaggle credentials here "
            "(KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY)"
        )
    if version is None:
        version = kaggle_version(ref, api, auth, name)
    owner, _, slug = ref.partition("/")
    entry = os.path.join(cache_dir, "kaggle", owner.lower(), slug.lower(), f"v{version}")
    with _Lock(entry, lambda: log(f"input '{name}': waiting for another fetch of it")):
        if _complete(entry):
            log(f"input '{name}': Kaggle dataset {ref} v{version} is cached ({entry})")
            return Fetched(name, entry, 0, True)
        body = {"ownerSlug": owner, "datasetSlug": slug, "datasetVersionNumber": version}
        rpc = f"{api}/v1/datasets.DatasetApiService/DownloadDataset"
        where = _redirect_target(rpc, body, auth, name, ref)
        work = _fresh_work_dir(entry)
        part = entry + ".zip.part"
        log(f"input '{name}': downloading Kaggle dataset {ref} v{version}")
        # the archive host gets no credentials: it is a signed URL, maybe another host
        _digest, size, sent = _download(name, where, {}, part)
        try:
            with zipfile.ZipFile(part) as archive:
                for member in archive.infolist():
                    _extract(archive, member, work, name)  # CRC checked on read
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
            os.remove(part)
            raise FetchError(f"input '{name}': the archive of {ref} is damaged ({e})") from e
        os.remove(part)
        _seal(work, entry, {"kaggle": ref, "version": version, "archive_size": size})
        log(f"input '{name}': {ref} v{version}, {size} bytes unpacked")
        return Fetched(name, entry, sent, False)


def _unpack(name: str, archive: str, fname: str, dest: str) -> None:
    """A .zip or a tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) into dest; members that would
    land outside it, links and devices are refused."""
    lower = fname.lower()
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    _extract(zf, member, dest, name)
            return
        if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as tf:
                for member in tf:
                    target = _inside(dest, member.name, name, fname)
                    if member.isdir():
                        os.makedirs(target, exist_ok=True)
                    elif member.issym() or member.islnk():
                        raise FetchError(
                            f"input '{name}': {fname} holds a link ({member.name}); links in "
                            "inputs are not unpacked"
                        )
                    elif member.isfile():
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        src = tf.extractfile(member)
                        assert src is not None
                        with src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, CHUNK)
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise FetchError(f"input '{name}': {fname} is not a readable archive ({e})") from e
    raise FetchError(
        f"input '{name}': unpack is for .zip and .tar[.gz|.bz2|.xz] files, not {fname}"
    )


def _inside(dest: str, member: str, name: str, archive: str) -> str:
    """Where an archive member goes under dest; a member that would land outside is refused
    (the archive's own root, "." or "./", is dest itself)."""
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(dest, member))
    if target != root and not target.startswith(root + os.sep):
        raise FetchError(f"input '{name}': {archive} names a file outside it: {member}")
    return target


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, dest: str, name: str) -> None:
    target = _inside(dest, member.filename, name, "the archive")
    if member.is_dir() or os.path.realpath(dest) == target:
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with archive.open(member) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)  # raises BadZipFile on a CRC mismatch


def _rpc(url: str, body: dict[str, Any], auth: str, name: str, ref: str) -> dict[str, Any]:
    answer = _kaggle_post(url, body, auth, name, ref, redirect=False)
    return cast("dict[str, Any]", json.loads(answer or b"{}"))


def _redirect_target(url: str, body: dict[str, Any], auth: str, name: str, ref: str) -> str:
    """Kaggle answers DownloadDataset with a redirect to the archive; its address."""
    return str(_kaggle_post(url, body, auth, name, ref, redirect=True))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller reads Location itself, so no credential follows the redirect


def _kaggle_post(
    url: str, body: dict[str, Any], auth: str, name: str, ref: str, *, redirect: bool
) -> bytes | str:
    """One Kaggle RPC, retried on 429/5xx and dropped connections: its JSON body, or with
    `redirect` the address it redirects to (read here, so no credential follows it)."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": auth},
        method="POST",
    )
    for attempt in range(RETRIES + 1):
        try:
            with opener.open(req, timeout=TIMEOUT_S) as resp:
                if not redirect:
                    return bytes(resp.read())
                raise FetchError(
                    f"input '{name}': Kaggle answered the download of {ref} with HTTP "
                    f"{resp.status}, not a redirect to the archive"
                )
        except urllib.error.HTTPError as e:
            location = e.headers.get("Location")
            if redirect and e.code in (301, 302, 303, 307, 308) and location:
                return urllib.parse.urljoin(url, location)
            if e.code in RETRIED_STATUS and attempt < RETRIES:
                time.sleep(_backoff(attempt, e.headers.get("Retry-After")))
                continue
            raise FetchError(_kaggle_refusal(name, ref, e)) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt < RETRIES:
                time.sleep(_backoff(attempt, None))
                continue
            raise FetchError(f"input '{name}': Kaggle did not answer ({e})") from e
    raise AssertionError("unreachable")


def _kaggle_refusal(name: str, ref: str, e: urllib.error.HTTPError) -> str:
    if e.code in (401, 403):
        return f"input '{name}': Kaggle refused the credentials for {ref} (HTTP {e.code})"
    if e.code == 404:
        return f"input '{name}': Kaggle dataset {ref} does not exist or is not visible to you"
    return f"input '{name}': Kaggle answered HTTP {e.code} for {ref}"


# ---- Hugging Face Hub repositories ----------------------------------------------------------


def hf_endpoint(item: dict[str, Any], env: Mapping[str, str]) -> str:
    return str(item.get("endpoint") or env.get("HF_ENDPOINT") or HF_HUB).rstrip("/")


def hf_headers(env: Mapping[str, str]) -> dict[str, str]:
    token = (env.get("HF_TOKEN") or "").strip()
    return {"Authorization": "Bearer " + token} if token else {}


def hf_commit(item: dict[str, Any], env: Mapping[str, str], name: str) -> str:
    """The commit a repository's revision (a branch, a tag or a commit) points at now."""
    kinds = "datasets" if item.get("repo_type") == "dataset" else "models"
    repo, revision = str(item["repo"]), str(item.get("revision") or "main")
    quoted = urllib.parse.quote(revision, safe="")
    url = f"{hf_endpoint(item, env)}/api/{kinds}/{repo}/revision/{quoted}"
    info = _get_json(url, hf_headers(env), name, repo)
    sha = cast("dict[str, Any]", info).get("sha") if isinstance(info, dict) else None
    if not isinstance(sha, str) or not sha:
        raise FetchError(f"input '{name}': the Hub gives no commit for {repo}@{revision}")
    return sha


def _fetch_hf(
    name: str, item: dict[str, Any], env: Mapping[str, str], cache_dir: str, log: Log
) -> Fetched:
    """Every file of a Hub repository at one commit, each checked against the listing: an LFS
    file's sha256, any other file's git blob id."""
    repo = str(item["repo"])
    dataset = item.get("repo_type") == "dataset"
    kinds, prefix = ("datasets", "datasets/") if dataset else ("models", "")
    endpoint, auth = hf_endpoint(item, env), hf_headers(env)
    sha = str(item.get("revision") or "")
    if not is_commit(sha):
        sha = hf_commit(item, env, name)
    entry = os.path.join(cache_dir, "hf", kinds, *repo.lower().split("/"), sha)
    with _Lock(entry, lambda: log(f"input '{name}': waiting for another fetch of it")):
        if _complete(entry):
            log(f"input '{name}': {repo}@{sha[:12]} is cached ({entry})")
            return Fetched(name, entry, 0, True)
        files = _hf_tree(
            f"{endpoint}/api/{kinds}/{repo}/tree/{sha}?recursive=true", auth, name, repo
        )
        work = _fresh_work_dir(entry)
        log(f"input '{name}': downloading {len(files)} file(s) of {repo}@{sha[:12]}")
        total = sent = 0
        for f in files:
            path = str(f["path"])
            target = _inside(work, path, name, repo)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            url = f"{endpoint}/{prefix}{repo}/resolve/{sha}/{urllib.parse.quote(path)}"
            # parts live beside the entry, so an interrupted fetch resumes where it stopped
            part = os.path.join(entry + ".parts", str(f.get("oid") or path.replace("/", "_")))
            os.makedirs(os.path.dirname(part), exist_ok=True)
            digest, size, got = _download(name, url, auth, part)
            lfs = f.get("lfs")
            if isinstance(lfs, dict):
                want, have = str(cast("dict[str, Any]", lfs).get("oid", "")), digest
            else:
                want, have = str(f.get("oid", "")), _git_blob_id(part, size)
            if want != have:
                os.remove(part)
                raise FetchError(
                    f"input '{name}': {repo}/{path} arrived with hash {have}, the Hub lists "
                    f"{want}; nothing of it was used"
                )
            os.replace(part, target)
            total, sent = total + size, sent + got
        _seal(work, entry, {"hf": repo, "sha": sha, "size": total})
        shutil.rmtree(entry + ".parts", ignore_errors=True)
        log(f"input '{name}': {repo}@{sha[:12]}, {len(files)} file(s), {total} bytes")
        return Fetched(name, entry, sent, False)


def is_commit(revision: str | None) -> bool:
    """A full commit id (40 lowercase hex digits): immutable, so nothing to ask the Hub."""
    return bool(revision) and re.fullmatch(r"[0-9a-f]{40}", str(revision)) is not None


def _hf_tree(url: str, auth: dict[str, str], name: str, repo: str) -> list[dict[str, Any]]:
    """The repository's files at a commit; the Hub pages long listings (a Link: next header)."""
    files: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        page, link = _get_json_page(next_url, auth, name, repo)
        if not isinstance(page, list):
            raise FetchError(f"input '{name}': the Hub's file list of {repo} is not a list")
        for entry in cast("list[Any]", page):
            if isinstance(entry, dict) and cast("dict[str, Any]", entry).get("type") == "file":
                files.append(cast("dict[str, Any]", entry))
        next_url = _next_link(link)
    return files


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(","):
        if 'rel="next"' in part and "<" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return None


def _git_blob_id(path: str, size: int) -> str:
    h = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324 - git's id, not a security hash
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _get_json(url: str, headers: dict[str, str], name: str, repo: str) -> Any:
    return _get_json_page(url, headers, name, repo)[0]


def _get_json_page(
    url: str, headers: dict[str, str], name: str, repo: str
) -> tuple[Any, str | None]:
    req = urllib.request.Request(url, headers=dict(headers, Accept="application/json"))
    for attempt in range(RETRIES + 1):
        try:
            with _opener().open(req, timeout=TIMEOUT_S) as resp:
                return json.loads(resp.read() or b"null"), resp.headers.get("Link")
        except urllib.error.HTTPError as e:
            if e.code in RETRIED_STATUS and attempt < RETRIES:
                time.sleep(_backoff(attempt, e.headers.get("Retry-After")))
                continue
            if e.code in (401, 403):
                why = "is private or gated: set HF_TOKEN to a token with access"
            elif e.code == 404:
                why = "does not exist (or is private: set HF_TOKEN), or has no such revision"
            else:
                why = f"answered HTTP {e.code}"
            raise FetchError(f"input '{name}': the Hub repository {repo} {why}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            if attempt < RETRIES:
                time.sleep(_backoff(attempt, None))
                continue
            raise FetchError(f"input '{name}': the Hub did not answer ({e})") from e
    raise AssertionError("unreachable")


class _DropAuthElsewhere(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but a credential never goes to another host (a CDN, a signed URL)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            for key in ("Authorization", "authorization"):
                new.headers.pop(key, None)
                new.unredirected_hdrs.pop(key, None)
        return new


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_DropAuthElsewhere)


# ---- the download loop ----------------------------------------------------------------------


def _download(name: str, url: str, headers: dict[str, str], part: str) -> tuple[str, int, int]:
    """GET url into `part`, resuming what is there; (sha256, size, bytes sent over the wire)."""
    digest = hashlib.sha256()
    have = 0
    if os.path.exists(part):
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
                have += len(block)
    sent = 0
    for attempt in range(RETRIES + 1):
        req = urllib.request.Request(url, headers=dict(headers))
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with _opener().open(req, timeout=TIMEOUT_S) as resp:
                if have and resp.status != 206:  # the server ignored Range: start over
                    digest, have = hashlib.sha256(), 0
                total = resp.headers.get("Content-Length")
                expected = have + int(total) if total is not None else None
                with open(part, "ab" if have else "wb") as out:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        digest.update(block)
                        have += len(block)
                        sent += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                if expected is not None and have < expected:
                    raise OSError(f"the connection closed after {have} of {expected} bytes")
                return digest.hexdigest(), have, sent
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # asked past the end: what we have is all of it
                return digest.hexdigest(), have, sent
            if e.code in RETRIED_STATUS and attempt < RETRIES:
                time.sleep(_backoff(attempt, e.headers.get("Retry-After")))
                continue
            raise FetchError(f"input '{name}': {_shown(url)} answered HTTP {e.code}") from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt < RETRIES:
                time.sleep(_backoff(attempt, None))
                continue
            raise FetchError(f"input '{name}': downloading {_shown(url)} failed ({e})") from e
    raise AssertionError("unreachable")


def _shown(url: str) -> str:
    """A URL without its query: a signed URL's signature is a credential for a while."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _backoff(attempt: int, retry_after: str | None) -> float:
    try:
        if retry_after:
            return min(60.0, float(retry_after))
    except ValueError:
        pass
    return min(30.0, 0.5 * 2**attempt)


# ---- the cache ------------------------------------------------------------------------------


def _complete(entry: str) -> bool:
    return os.path.isfile(entry + _DONE) and os.path.isdir(entry)


def _read_only(root: str) -> None:
    for folder, dirs, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(folder, f), 0o444)
        for d in dirs:
            os.chmod(os.path.join(folder, d), 0o555)
    os.chmod(root, 0o555)


def _rmtree(path: str) -> None:
    """Remove a folder, read-only parts included (never following a link); silent when it is
    not there."""
    if os.path.islink(path):
        os.remove(path)
        return
    if not os.path.lexists(path):
        return
    os.chmod(path, 0o755)
    for folder, dirs, _files in os.walk(path):  # does not descend into links
        for d in dirs:
            sub = os.path.join(folder, d)
            if not os.path.islink(sub):
                os.chmod(sub, 0o755)
    shutil.rmtree(path)


def _fresh_work_dir(entry: str) -> str:
    work = entry + ".work"
    _rmtree(work)  # a crashed fetch's leftovers, never an input
    os.makedirs(work)
    return work


def _seal(work: str, entry: str, facts: dict[str, Any]) -> None:
    """Make `work` the entry: the folder by one rename, then the record that it is whole (kept
    beside it, so the input holds exactly what was downloaded)."""
    _rmtree(entry)  # a half-sealed entry of a crashed fetch
    _read_only(work)  # a job that writes into its input must not change the next run's
    os.replace(work, entry)
    with open(entry + _DONE + ".tmp", "w", encoding="utf-8") as f:
        json.dump(facts, f)
    os.replace(entry + _DONE + ".tmp", entry + _DONE)


def _replace_link(target: str, link: str) -> None:
    tmp = link + ".link-tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    if os.path.isdir(link) and not os.path.islink(link):
        shutil.rmtree(link)
    os.replace(tmp, link)


class _Lock:
    """An exclusive lock on `<entry>.lock`, held across check-download-seal."""

    def __init__(self, entry: str, on_wait: Callable[[], None]) -> None:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        self._path = entry + ".lock"
        self._fd = -1
        self._on_wait = on_wait

    def __enter__(self) -> _Lock:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._on_wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
