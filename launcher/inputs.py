"""How each job input reaches $LAUNCH_INPUT_DIR/<as>: one resolver for every target.

A target says, per source kind, the ways it can deliver, best first (`InputWays`, a class
attribute of the target); `resolve` picks the first for each input and says what is missing
before anything is rented: a local folder that is not there, Kaggle credentials a Kaggle input
needs, a kind the target cannot carry. `launch plan` shows the result, `prepare` uses it.

The ways:
- MOUNT: a local folder, bind-mounted or linked where the job runs (local target).
- UPLOAD: a local folder sent from here by manifest difference (Vast).
- FETCH_HERE: downloaded here once into the input cache (launch_fetch: verified, resumable,
  keyed by content), then mounted like a folder; a second run downloads nothing.
- FETCH_THERE: downloaded by the machine itself before the job starts (the agent runs
  launch_fetch there), with the credentials a source needs passed at run time as secrets.
- PLATFORM: the platform's own mechanism (Kaggle datasets as the kernel's dataset sources).
- PRIVATE_DATASET: a local folder packed once per content and uploaded as a private Kaggle
  dataset, a new version only when the content changed; the kernel unpacks it.
- DRIVE: the same pack, uploaded once to the user's Drive for a Colab notebook to unpack.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from launcher import settings
from launcher.errors import SubmitError, TargetUnavailableError

if TYPE_CHECKING:
    from launcher.spec import InputSpec, JobSpec

Kind = Literal["kaggle", "path", "url", "hf"]
KAGGLE_SECRET_NAMES = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")


class Way(str, Enum):
    MOUNT = "mount"
    UPLOAD = "upload"
    FETCH_HERE = "fetch_here"
    FETCH_THERE = "fetch_there"
    PLATFORM = "platform"
    PRIVATE_DATASET = "private_dataset"
    DRIVE = "drive"


class InputWays(BaseModel):
    """What a target can do with each kind of input, best first; empty: it cannot."""

    model_config = ConfigDict(frozen=True)

    kaggle: tuple[Way, ...] = ()
    path: tuple[Way, ...] = ()
    url: tuple[Way, ...] = ()
    hf: tuple[Way, ...] = ()
    why_not: dict[str, str] = Field(default_factory=dict[str, str])  # kind -> the reason
    # where a machine that downloads a Kaggle dataset itself reads the credentials, when not
    # from here (Colab: its Secrets panel); "" = passed from here at run time
    kaggle_credentials_there: str = ""
    # where a machine reads other secrets by name (HF_TOKEN), when not passed from here
    secrets_there: str = ""

    def first(self, kind: Kind) -> Way | None:
        ways: tuple[Way, ...] = getattr(self, kind)
        return ways[0] if ways else None


class FetchItem(BaseModel):
    """One input for launch_fetch, as it travels in agent.json (see launch_fetch's docstring)."""

    name: str
    kind: Literal["kaggle", "url", "hf"]
    url: str | None = None
    repo: str | None = None  # hf: org/name
    repo_type: Literal["model", "dataset"] | None = None
    revision: str | None = None  # hf: a branch, tag or commit; pinned to the commit at prepare
    endpoint: str | None = None  # hf: the Hub's root when it is not huggingface.co
    sha256: str | None = None
    unpack: bool = False
    ref: str | None = None
    version: int | None = None
    api: str | None = None  # the Kaggle API root when it is not Kaggle's own (an emulator)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=True) | {
            "name": self.name,
            "kind": self.kind,
        }


class Delivery(BaseModel):
    """How one input arrives, for `launch plan` and the target's prepare."""

    name: str
    source: str  # as the spec writes it
    kind: Kind
    way: Way
    local_path: str | None = None  # a `path:` input's folder here
    ref: str | None = None  # a `kaggle:` input's owner/slug
    size_bytes: int | None = None  # known without asking the network
    fetch: FetchItem | None = None  # for FETCH_HERE and FETCH_THERE

    @property
    def shown(self) -> str:
        size = f", {human_bytes(self.size_bytes)}" if self.size_bytes is not None else ""
        how = {
            Way.MOUNT: "mounted from here",
            Way.UPLOAD: "uploaded from here (only what changed)",
            Way.FETCH_HERE: "downloaded here once (cached), then mounted",
            Way.FETCH_THERE: "downloaded by the machine itself before the job starts",
            Way.PLATFORM: "attached by the platform (a Kaggle dataset source)",
            Way.PRIVATE_DATASET: "uploaded as a private Kaggle dataset (a new version only "
            "when it changed)",
            Way.DRIVE: "uploaded once to your Drive (My Drive/launch/inputs), reused while "
            "unchanged; the notebook unpacks it",
        }[self.way]
        return f"{self.name} <- {self.source}: {how}{size}"


class Resolution(BaseModel):
    deliveries: list[Delivery] = Field(default_factory=list[Delivery])
    problems: list[str] = Field(default_factory=list[str])
    hints: list[str] = Field(default_factory=list[str])
    secrets: list[str] = Field(default_factory=list[str])  # env names to pass to the machine

    def raise_problems(self) -> None:
        if self.problems:
            raise TargetUnavailableError(
                "; ".join(self.problems), hint="; ".join(self.hints) or None
            )

    def with_way(self, *ways: Way) -> list[Delivery]:
        return [d for d in self.deliveries if d.way in ways]


def kind_of(item: InputSpec) -> Kind:
    if item.kaggle is not None:
        return "kaggle"
    if item.path is not None:
        return "path"
    if item.hf is not None:
        return "hf"
    return "url"


def resolve(spec: JobSpec, ways: InputWays, target: str) -> Resolution:
    """Each input's way on `target`, and every problem found without the network."""
    out = Resolution()
    needs_kaggle_here = needs_kaggle_there = False
    for item in spec.inputs:
        kind = kind_of(item)
        way = ways.first(kind)
        name = str(item.name)
        if way is None:
            why = ways.why_not.get(kind, "")
            out.problems.append(
                f"input '{name}' ({item.source}): the {target} target cannot deliver a "
                f"{kind} input{': ' + why if why else ''}"
            )
            continue
        delivery = Delivery(name=name, source=item.source, kind=kind, way=way)
        if kind == "path":
            src = (spec.project_root / str(item.path)).resolve()
            if not src.exists():
                out.problems.append(f"input '{name}': {src} does not exist here")
                continue
            delivery.local_path = str(src)
            delivery.size_bytes = tree_size(src)
        else:
            delivery.ref = item.kaggle
            delivery.fetch = fetch_item(item)
            if kind == "kaggle" and way is Way.FETCH_HERE:
                needs_kaggle_here = True
            if kind == "kaggle" and way is Way.FETCH_THERE:
                needs_kaggle_there = True
        out.deliveries.append(delivery)
    hf_there = any(d.kind == "hf" and d.way is Way.FETCH_THERE for d in out.deliveries)
    if hf_there and os.environ.get("HF_TOKEN"):  # private or gated repositories
        out.secrets.append("HF_TOKEN")
        if ways.secrets_there:
            out.hints.append(
                f"a private Hub repository is read with HF_TOKEN from {ways.secrets_there}"
            )
    if needs_kaggle_there and ways.kaggle_credentials_there:
        out.secrets.extend(["KAGGLE_USERNAME", "KAGGLE_KEY"])  # read there, by name
        out.hints.append(ways.kaggle_credentials_there)
        needs_kaggle_there = False
    if needs_kaggle_here or needs_kaggle_there:
        _check_kaggle_credentials(out, there=needs_kaggle_there)
    return out


def pin_versions(res: Resolution) -> None:
    """Fix each downloaded Kaggle input to the dataset's current version, asked now: every
    attempt of the run, on any machine, gets the data the first one had (a new version
    published mid-run is for the next run), and a cached version needs no question."""
    from launcher import launch_fetch

    fetched = res.with_way(Way.FETCH_HERE, Way.FETCH_THERE)
    for d in fetched:  # a Hub repository: its revision becomes the commit it is at now
        if d.fetch is not None and d.kind == "hf" and not launch_fetch.is_commit(d.fetch.revision):
            try:
                commit = launch_fetch.hf_commit(d.fetch.as_json(), os.environ, d.name)
            except launch_fetch.FetchError as e:
                raise TargetUnavailableError(str(e)) from e
            d.fetch.revision = commit
    todo = [d for d in fetched if d.fetch and d.kind == "kaggle" and not d.fetch.version]
    if not todo:
        return
    try:
        env = dict(os.environ, **kaggle_secret_values())
    except TargetUnavailableError:
        return  # the machine reads them itself (Colab): it asks for the version there
    auth = launch_fetch.kaggle_auth(env)
    for d in todo:
        assert d.fetch is not None and d.fetch.ref is not None and auth is not None
        api = (d.fetch.api or launch_fetch.KAGGLE_API).rstrip("/")
        try:
            d.fetch.version = launch_fetch.kaggle_version(d.fetch.ref, api, auth, d.name)
        except launch_fetch.FetchError as e:
            raise TargetUnavailableError(str(e)) from e


_SIZES: dict[str, int | None] = {}  # source -> size, asked once per process (`plan --all`)
PROBE_BUDGET_S = 10.0  # all of one plan's size questions together


def probe_sizes(res: Resolution) -> None:
    """Fill in the sizes of remote inputs, asked quickly of their sources (for `launch plan`);
    a source that does not answer in time leaves the size unknown. LAUNCH_NO_PROBE=1 asks
    nothing."""
    import time

    from launcher import launch_fetch

    if settings.flag("LAUNCH_NO_PROBE"):
        return
    env = dict(os.environ)
    deadline = time.monotonic() + PROBE_BUDGET_S
    for d in res.deliveries:
        if d.fetch is None or d.size_bytes is not None:
            continue
        if d.source in _SIZES:
            d.size_bytes = _SIZES[d.source]
            continue
        left = deadline - time.monotonic()
        if left <= 0.5:
            return
        if d.kind == "kaggle":
            try:
                env.update(kaggle_secret_values())
            except TargetUnavailableError:
                continue
        d.size_bytes = launch_fetch.remote_size(d.fetch.as_json(), env, min(5.0, left))
        _SIZES[d.source] = d.size_bytes


def fetch_item(item: InputSpec) -> FetchItem:
    if item.hf is not None:
        dataset = item.hf.startswith("datasets/")
        repo = (
            item.hf.split("/", 1)[1] if item.hf.startswith(("datasets/", "models/")) else item.hf
        )
        return FetchItem(
            name=str(item.name),
            kind="hf",
            repo=repo,
            repo_type="dataset" if dataset else "model",
            revision=item.revision,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    if item.kaggle is not None:
        api = settings.url("LAUNCH_KAGGLE_URL")
        return FetchItem(name=str(item.name), kind="kaggle", ref=item.kaggle, api=api)
    return FetchItem(
        name=str(item.name), kind="url", url=item.url, sha256=item.sha256, unpack=item.unpack
    )


def _check_kaggle_credentials(out: Resolution, *, there: bool) -> None:
    from launcher.targets.kaggle.client import CREDENTIALS_HINT, find_credentials

    try:
        creds = find_credentials()
    except TargetUnavailableError as e:
        out.problems.append(f"Kaggle dataset inputs need Kaggle credentials: {e.message}")
        out.hints.append(CREDENTIALS_HINT)
        return
    if there:  # passed to the machine at run time as secrets, never bundled
        out.secrets.extend(
            ["KAGGLE_API_TOKEN"] if creds.token else ["KAGGLE_USERNAME", "KAGGLE_KEY"]
        )


def kaggle_secret_values() -> dict[str, str]:
    """The Kaggle credentials as environment values for a machine that downloads a dataset
    itself (read from where the kaggle CLI looks: the environment, then kaggle.json)."""
    from launcher.targets.kaggle.client import find_credentials

    creds = find_credentials()
    if creds.token:
        return {"KAGGLE_API_TOKEN": creds.token}
    return {"KAGGLE_USERNAME": creds.username, "KAGGLE_KEY": creds.key or ""}


def fetch_secret_values(names: list[str]) -> dict[str, str]:
    """Values for `fetch_only_env` names, read at submit (never stored): the Kaggle credentials
    from wherever the kaggle CLI finds them."""
    if not names:
        return {}
    values = kaggle_secret_values() if any(n.startswith("KAGGLE_") for n in names) else {}
    values.update({n: os.environ[n] for n in names if n not in values and n in os.environ})
    return {n: values[n] for n in names if n in values}


def input_cache() -> Path:
    """Where FETCH_HERE keeps its downloads: $LAUNCH_INPUT_CACHE, or ~/.cache/launch/inputs."""
    if configured := settings.folder("LAUNCH_INPUT_CACHE"):
        return configured
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "launch" / "inputs"


def fetch_here(deliveries: list[Delivery], notify: Callable[[str], None]) -> dict[str, str]:
    """Download each FETCH_HERE input into the input cache; name -> its folder here."""
    from launcher import launch_fetch

    found: dict[str, str] = {}
    for d in deliveries:
        assert d.fetch is not None
        env = dict(os.environ)
        if d.kind == "kaggle":
            env.update(kaggle_secret_values())  # from kaggle.json too, as the CLI reads them
        try:
            got = launch_fetch.fetch_one(d.fetch.as_json(), str(input_cache()), notify, env)
        except launch_fetch.FetchError as e:
            raise SubmitError(str(e)) from e
        found[d.name] = got.path
    return found


class PackedFolder(BaseModel):
    """A local input folder as a tar.gz named after its content, kept under home/inputs."""

    archive: Path
    file: str  # input-<content digest>.tar.gz
    sha256: str  # of the archive: what a machine checks before it unpacks


def pack_folder(home: Path, folder: Path) -> PackedFolder:
    """`folder` as a tar.gz built once per content: the same content gives the same name and the
    same bytes on any machine, so a platform copy named after it can be reused by any run."""
    from launcher.sync import sha256_file

    file = f"input-{tree_digest(folder)[:16]}.tar.gz"
    archive = home / "inputs" / file
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_name(f".{file}.{os.getpid()}.tmp")
        _deterministic_tar_gz(folder, tmp)
        os.replace(tmp, archive)
    return PackedFolder(archive=archive, file=file, sha256=sha256_file(archive))


def _deterministic_tar_gz(folder: Path, dest: Path) -> None:
    """The folder's files (links followed) as a tar.gz that is byte-identical for the same
    content on any machine: sorted names, no mtimes, owners or gzip timestamp."""
    import gzip
    import tarfile

    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for p in files:
            info = tarfile.TarInfo(p.name if p == folder else p.relative_to(folder).as_posix())
            info.size = p.stat().st_size
            info.mode = 0o644
            with p.open("rb") as src:
                tf.addfile(info, src)


def tree_digest(path: Path) -> str:
    """sha256 over every file's relative path, size and content: the same folder, the same
    digest, wherever it is (mtimes and owners do not count)."""
    import hashlib

    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
