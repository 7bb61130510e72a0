"""launch_fetch: inputs fetched from a URL or the Kaggle emulator, verified, cached, resumed."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from launcher import launch_fetch as lf
from launcher.sim.kaggle import KaggleSim

USER, KEY = "alice", "0123456789abcdef"


class Files:
    """A static file server on 127.0.0.1 with Range, that can cut a response short once."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.cut_next_at: int | None = None
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = outer.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                asked = self.headers.get("Range") or ""
                if asked.startswith("bytes="):
                    start = int(asked[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.cut_next_at is not None:
                    body, outer.cut_next_at = body[: outer.cut_next_at], None
                self.wfile.write(body)
                outer.sent += len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files() -> Iterator[Files]:
    f = Files({"/w/weights.bin": b"w" * 300_000})
    yield f
    f.close()


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaggleSim]:
    with KaggleSim(runtime="process", data_dir=tmp_path_factory.mktemp("ksim")) as sim:
        yield sim


def quiet(_line: str) -> None:
    pass


def test_a_url_input_is_checked_cached_and_linked(files: Files, tmp_path: Path) -> None:
    data = files.files["/w/weights.bin"]
    item = {
        "name": "weights",
        "kind": "url",
        "url": files.url + "/w/weights.bin",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    got = lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
    assert (tmp_path / "in" / "weights" / "weights.bin").read_bytes() == data
    assert got[0].downloaded == len(data) and not got[0].cached
    again = lf.fetch_all([item], str(tmp_path / "in2"), str(tmp_path / "cache"), quiet)
    assert again[0].cached and again[0].downloaded == 0
    assert files.sent == len(data)  # the second run sent nothing


def test_a_wrong_sha256_is_refused_and_nothing_is_cached(files: Files, tmp_path: Path) -> None:
    item = {
        "name": "weights",
        "kind": "url",
        "url": files.url + "/w/weights.bin",
        "sha256": "0" * 64,
    }
    with pytest.raises(
        lf.FetchError, match="input 'weights'.*has sha256 .*the job spec says 0000"
    ):
        lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
    assert not (tmp_path / "in" / "weights").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "lock" not in p.name]


def test_a_dropped_connection_resumes_where_it_stopped(files: Files, tmp_path: Path) -> None:
    data = files.files["/w/weights.bin"]
    files.cut_next_at = 100_000
    item = {"name": "w", "kind": "url", "url": files.url + "/w/weights.bin"}
    got = lf.fetch_one(item, str(tmp_path / "cache"), quiet)
    assert (Path(got.path) / "weights.bin").read_bytes() == data
    assert files.sent == len(data)  # 100,000 then the other 200,000: nothing twice


def test_a_kaggle_dataset_downloads_unpacked_and_once_per_version(
    kaggle: KaggleSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "videos").mkdir(parents=True)
    (src / "videos" / "a.txt").write_text("fight\n")
    (src / "labels.csv").write_text("a,1\n")
    kaggle.seed_dataset("bob/rwf-mini", src)
    monkeypatch.setenv("LAUNCH_KAGGLE_URL", kaggle.url)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    item = {"name": "rwf", "kind": "kaggle", "ref": "bob/rwf-mini"}
    lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
    assert (tmp_path / "in" / "rwf" / "videos" / "a.txt").read_text() == "fight\n"
    first = kaggle.dataset_bytes_served("bob/rwf-mini")
    assert first > 0
    lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
    assert kaggle.dataset_bytes_served("bob/rwf-mini") == first
    (src / "labels.csv").write_text("a,1\nb,0\n")
    kaggle.seed_dataset("bob/rwf-mini", src)  # version 2: fetched anew
    lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
    assert (tmp_path / "in" / "rwf" / "labels.csv").read_text() == "a,1\nb,0\n"
    assert kaggle.dataset_bytes_served("bob/rwf-mini") > first


def test_kaggle_refusals_name_the_input(
    kaggle: KaggleSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCH_KAGGLE_URL", kaggle.url)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    item = {"name": "rwf", "kind": "kaggle", "ref": "bob/nothing-here"}
    with pytest.raises(lf.FetchError, match="needs Kaggle credentials"):
        lf.fetch_one(item, str(tmp_path), quiet)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(lf.FetchError, match="refused the credentials"):
        lf.fetch_one(item, str(tmp_path), quiet)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    with pytest.raises(lf.FetchError, match="bob/nothing-here does not exist"):
        lf.fetch_one(item, str(tmp_path), quiet)


def test_an_archive_url_is_unpacked_and_a_hostile_member_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    def tgz(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    server = Files({
        "/c.tar.gz": tgz({"cifar-10-batches-py/data_batch_1": b"x" * 10}),
        "/evil.tgz": tgz({"../../escape.txt": b"no"}),
    })  # fmt: skip
    try:
        item = {"name": "cifar10", "kind": "url", "url": server.url + "/c.tar.gz", "unpack": True}
        lf.fetch_all([item], str(tmp_path / "in"), str(tmp_path / "cache"), quiet)
        got = tmp_path / "in" / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
        assert got.read_bytes() == b"x" * 10
        assert not (tmp_path / "in" / "cifar10" / "c.tar.gz").exists()
        evil = {"name": "e", "kind": "url", "url": server.url + "/evil.tgz", "unpack": True}
        with pytest.raises(lf.FetchError, match="names a file outside it"):
            lf.fetch_one(evil, str(tmp_path / "cache"), quiet)
        assert not list(tmp_path.rglob("escape.txt"))
    finally:
        server.close()


def tar_gz(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """(name, data or None for a folder, link target or b"") members as a .tar.gz."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link.decode()
                tf.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archives_made_from_dot_unpack_and_links_or_escapes_are_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("../outside.txt", b"no")
    server = Files({
        "/dot.tgz": tar_gz([(".", None, b""), ("./a/b.txt", b"ok", b"")]),
        "/link.tgz": tar_gz([("evil", None, b"/etc/passwd")]),
        "/up.zip": zipped.getvalue(),
    })  # fmt: skip
    try:
        got = lf.fetch_one(
            {"name": "d", "kind": "url", "url": server.url + "/dot.tgz", "unpack": True},
            str(tmp_path / "cache"),
            quiet,
        )
        assert (Path(got.path) / "a" / "b.txt").read_bytes() == b"ok"
        with pytest.raises(lf.FetchError, match="holds a link"):
            lf.fetch_one(
                {"name": "l", "kind": "url", "url": server.url + "/link.tgz", "unpack": True},
                str(tmp_path / "cache"),
                quiet,
            )
        with pytest.raises(lf.FetchError, match="names a file outside it"):
            lf.fetch_one(
                {"name": "z", "kind": "url", "url": server.url + "/up.zip", "unpack": True},
                str(tmp_path / "cache"),
                quiet,
            )
        assert not list(tmp_path.rglob("outside.txt"))
    finally:
        server.close()


def test_a_url_file_name_is_never_a_path() -> None:
    assert lf.url_file_name("https://h/dl/..%2F..%2F..%2F.bashrc") == "bashrc"
    assert lf.url_file_name("https://h/x/..") == "download"
    assert lf.url_file_name("https://h/a%2Fb.bin?sig=secret") == "b.bin"
    assert lf.url_file_name("https://h/w/model weights.safetensors") == "model_weights.safetensors"


def test_a_sealed_entry_is_read_only_and_a_signed_query_is_never_logged(
    files: Files, tmp_path: Path
) -> None:
    lines: list[str] = []
    item = {"name": "w", "kind": "url", "url": files.url + "/w/weights.bin?X-Goog-Signature=abc"}
    got = lf.fetch_one(item, str(tmp_path / "cache"), lines.append)
    assert lines and not any("X-Goog-Signature" in line for line in lines)
    done = Path(got.path + ".done.json").read_text()
    assert "X-Goog-Signature" not in done
    # read-only for everyone but root (a job that writes into its input gets EACCES)
    assert (Path(got.path) / "weights.bin").stat().st_mode & 0o222 == 0
    assert Path(got.path).stat().st_mode & 0o222 == 0
