"""An image's ENV read from its config: from this machine's engine and from a real registry
(Debian's docker-registry), the way the Vast target hands it to a job started over SSH."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from launcher.errors import TargetError
from launcher.image_config import ImageConfig, from_registry, image_config
from launcher.targets.vast.prepare import _engine_config
from tests.registry import registry

__all__ = ["registry"]  # the fixture, imported for pytest

pytestmark = pytest.mark.docker

DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV PATH=/opt/tool/bin:$PATH MARKER="a=b c"
WORKDIR /srv/job
"""


@pytest.fixture(scope="module")
def pushed(base_image: str, registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image with its own ENV and WORKDIR, in the registry and no longer on this engine."""
    folder = tmp_path_factory.mktemp("envimage")
    (folder / "Dockerfile").write_text(DOCKERFILE)
    ref = f"{registry}/lab/envimage:1"
    for cmd in (
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", ref, str(folder)],
        ["docker", "push", ref],
        ["docker", "rmi", ref],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    yield ref


def _expect(config: ImageConfig) -> None:
    assert config.env["PATH"].startswith("/opt/tool/bin:"), config.env
    assert config.env["MARKER"] == "a=b c"
    assert config.workdir == "/srv/job"


def test_the_registry_config_blob_gives_the_image_environment(pushed: str) -> None:
    _expect(from_registry(pushed))


def test_an_index_is_followed_to_its_linux_amd64_manifest(pushed: str, registry: str) -> None:
    """Multi-platform images are an index of manifests; the GPU machines run linux/amd64."""
    base = f"http://{registry}/v2/lab/envimage/manifests"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    with urllib.request.urlopen(urllib.request.Request(f"{base}/1", headers={"Accept": accept})) as r:
        body = r.read()
        media = r.headers["Content-Type"]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {
                "mediaType": media,
                "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    put = urllib.request.Request(
        f"{base}/multi",
        data=json.dumps(index).encode(),
        method="PUT",
        headers={"Content-Type": index["mediaType"]},
    )
    urllib.request.urlopen(put).close()
    _expect(from_registry(f"{registry}/lab/envimage:multi"))


def test_a_missing_image_is_said_plainly(registry: str) -> None:
    with pytest.raises(TargetError, match="has no such image"):
        from_registry(f"{registry}/lab/nosuch:1")


def test_an_unreachable_registry_names_the_registry() -> None:
    with pytest.raises(TargetError, match=r"from 127\.0\.0\.1:9: .*refused") as err:
        from_registry("127.0.0.1:9/lab/img:1")
    assert err.value.hint and "reachable" in err.value.hint and "docker pull" in err.value.hint


def test_the_engine_answers_first_when_it_has_the_image(pushed: str) -> None:
    """A pulled (or built) image is read locally: no registry round trip, no network."""
    subprocess.run(["docker", "pull", "-q", pushed], check=True, capture_output=True)
    try:
        notes: list[str] = []
        _expect(image_config(pushed, notes.append, local=_engine_config))
        assert notes == []  # nothing was read from the registry
    finally:
        subprocess.run(["docker", "rmi", pushed], check=True, capture_output=True)
