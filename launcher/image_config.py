"""An image's own environment (`ENV`, `WORKDIR`), read from its config, for targets that start
the job without `docker run`.

Docker gives a container the image's `ENV`; an SSH session into that container does not (sshd
builds a login environment of its own), nor does a Slurm job or a notebook. So the job of
`images/libcem` started over SSH on a Vast instance would run the system `python3` instead of
`/opt/venv/bin/python3` and fail on `import numpy`. Targets that start the job another way hand
the image's environment to the agent, which puts it under the job's own `env:` (as `docker run
-e` goes over the image's `ENV`).

Where the config comes from, in order:
1. this machine's docker engine, when it has the image (an image folder built here, or a tag
   pulled before): no network, and for a content tag the same bytes a machine pulls;
2. the registry's own config blob (Registry HTTP API v2: manifest, then the config it names,
   checked against its digest), with an anonymous token or `docker login`'s credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field

from launcher.errors import TargetError

_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_DOCKER_HUB = "registry-1.docker.io"
_TIMEOUT_S = 20.0


class ImageConfig(BaseModel):
    """What a container of the image starts with, besides its command."""

    env: dict[str, str] = Field(default_factory=dict[str, str])
    workdir: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        """From an image config's `config` object (`Env: ["K=V", ...]`, `WorkingDir`)."""
        config = config or {}
        env: dict[str, str] = {}
        for item in cast("list[str]", config.get("Env") or []):
            name, sep, value = item.partition("=")
            if sep and name:
                env[name] = value
        return cls(env=env, workdir=str(config.get("WorkingDir") or ""))


def image_config(
    ref: str,
    notify: Callable[[str], None],
    local: Callable[[str], ImageConfig | None] = lambda _ref: None,
) -> ImageConfig:
    """The environment a container of `ref` starts with: from `local` (this machine's engine,
    which the caller knows how to reach) when it has the image, else from the registry. Raises
    `TargetError` when neither can say."""
    here = local(ref)
    if here is not None:
        return here
    notify(f"reading the environment of {ref} from its registry")
    return from_registry(ref)


class _Ref(BaseModel):
    host: str
    name: str  # the repository inside the registry: library/ubuntu, you/train
    reference: str  # a tag or a digest

    @classmethod
    def parse(cls, ref: str) -> _Ref:
        rest, digest = ref.split("@", 1) if "@" in ref else (ref, "")
        first, _, after = rest.partition("/")
        if after and ("." in first or ":" in first or first == "localhost"):
            host, path = first, after
        else:
            host, path = _DOCKER_HUB, rest
        tag = ""
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if host == _DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return cls(host=host, name=path, reference=digest or tag or "latest")

    @property
    def base(self) -> str:
        # docker itself talks plain HTTP to registries on the loopback, TLS everywhere else
        loop = self.host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
        return f"{'http' if loop else 'https'}://{self.host}/v2/{self.name}"


def from_registry(ref: str, *, docker_config: Path | None = None) -> ImageConfig:
    """Read `ref`'s config from its registry: the manifest (for an index, the linux/amd64
    one), then the config blob, verified against the digest the manifest gives."""
    r = _Ref.parse(ref)
    session = _Session(r, docker_config or Path.home() / ".docker" / "config.json")
    manifest = session.json(f"{r.base}/manifests/{r.reference}", _MANIFEST_TYPES)
    if "manifests" in manifest:  # an index: one manifest per platform
        chosen = _platform_manifest(ref, cast("list[dict[str, Any]]", manifest["manifests"]))
        manifest = session.json(f"{r.base}/manifests/{chosen}", _MANIFEST_TYPES)
    digest = str(cast("dict[str, Any]", manifest.get("config") or {}).get("digest") or "")
    if not digest.startswith("sha256:"):
        raise TargetError(f"{ref}: the registry's manifest names no config")
    blob = session.get(f"{r.base}/blobs/{digest}", "*/*")
    if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
        raise TargetError(f"{ref}: the registry sent a config that does not match {digest}")
    try:
        data = cast("dict[str, Any]", json.loads(blob))
        return ImageConfig.from_config(cast("dict[str, Any] | None", data.get("config")))
    except (ValueError, AttributeError, TypeError) as e:
        raise TargetError(f"{ref}: the registry's image config is not one: {e}") from e


def _platform_manifest(ref: str, entries: list[dict[str, Any]]) -> str:
    for entry in entries:
        plat = cast("dict[str, str]", entry.get("platform") or {})
        linux = plat.get("os") == "linux" and plat.get("architecture") == "amd64"
        if linux and entry.get("digest"):
            return str(entry["digest"])
    raise TargetError(f"{ref} has no linux/amd64 image, which GPU machines run")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # followed by hand: a blob's storage must not get the registry's token


class _Session:
    """GETs against one registry, answering its auth challenge once (Bearer or Basic)."""

    def __init__(self, ref: _Ref, docker_config: Path) -> None:
        self.ref = ref
        self.basic = _login(ref.host, docker_config)
        self.auth: str | None = None
        self.opener = urllib.request.build_opener(_NoRedirect)

    def json(self, url: str, accept: str) -> dict[str, Any]:
        try:
            return cast("dict[str, Any]", json.loads(self.get(url, accept)))
        except ValueError as e:
            raise TargetError(f"{self.ref.host} answered {url} with something not JSON") from e

    def get(self, url: str, accept: str) -> bytes:
        for _ in range(2):
            req = urllib.request.Request(url, headers={"Accept": accept})
            if self.auth:
                req.add_header("Authorization", self.auth)
            try:
                with self.opener.open(req, timeout=_TIMEOUT_S) as resp:
                    return cast("bytes", resp.read())
            except urllib.error.HTTPError as e:
                if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                    return self._storage(urllib.parse.urljoin(url, e.headers["Location"]))
                if e.code == 401 and self.auth is None:
                    self.auth = self._answer(e.headers.get("WWW-Authenticate", ""))
                    continue
                raise TargetError(self._refused(e.code)) from e
            except (OSError, urllib.error.URLError) as e:
                raise TargetError(
                    f"cannot read the image config of {self.ref.name} from {self.ref.host}: {e}",
                    hint="is the registry reachable from here? `docker pull` the image once "
                    "and launch reads it from this machine's engine instead",
                ) from e
        raise TargetError(self._refused(401))

    def _storage(self, where: str) -> bytes:
        """A blob the registry redirected to its storage (no registry token goes there)."""
        try:
            with urllib.request.urlopen(where, timeout=_TIMEOUT_S) as resp:
                return cast("bytes", resp.read())
        except OSError as e:  # HTTPError and URLError are OSErrors
            raise TargetError(f"{self.ref.host}: its storage did not send a blob: {e}") from e

    def _refused(self, code: int) -> str:
        what = {401: "refused our credentials", 403: "refused access", 404: "has no such image"}
        return (
            f"{self.ref.host} {what.get(code, f'answered HTTP {code}')} for "
            f"{self.ref.name}:{self.ref.reference}"
        )

    def _answer(self, challenge: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.basic:
                raise TargetError(
                    f"{self.ref.host} wants a login to read {self.ref.name}",
                    hint=f"docker login {self.ref.host}",
                )
            return f"Basic {self.basic}"
        fields = dict(_challenge_fields(params))
        realm = fields.pop("realm", "")
        if scheme.lower() != "bearer" or not realm:
            raise TargetError(f"{self.ref.host} asks for an unknown authentication: {challenge}")
        fields.setdefault("scope", f"repository:{self.ref.name}:pull")
        req = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(fields)}")
        if self.basic:
            req.add_header("Authorization", f"Basic {self.basic}")
        try:
            with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:
                token = cast("dict[str, str]", json.loads(resp.read()))
        except (OSError, ValueError) as e:
            raise TargetError(f"{self.ref.host}: no token from {realm}: {e}") from e
        return f"Bearer {token.get('token') or token.get('access_token') or ''}"


def _challenge_fields(params: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in params.split(","):
        key, _, value = part.strip().partition("=")
        if key:
            out.append((key.strip(), value.strip().strip('"')))
    return out


def _login(host: str, docker_config: Path) -> str | None:
    """`docker login`'s stored base64 user:password for `host`, when it wrote one in the
    file itself (a credential helper keeps it elsewhere; then reads are anonymous)."""
    try:
        auths = cast("dict[str, dict[str, str]]", json.loads(docker_config.read_text())["auths"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    keys = [host, f"https://{host}", "https://index.docker.io/v1/"] if host == _DOCKER_HUB else [
        host,
        f"https://{host}",
    ]
    for key in keys:
        value = (auths.get(key) or {}).get("auth")
        try:
            if value and b":" in base64.b64decode(value, validate=True):
                return value
        except ValueError:  # a broken entry: read anonymously, as docker would fail to log in
            continue
    return None
