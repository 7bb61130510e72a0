"""A real image registry on 127.0.0.1 for the tests: Debian's `docker-registry` (the CNCF
distribution registry), installed with apt-get when missing, never skipped. Docker pushes to
and pulls from 127.0.0.0/8 registries over plain HTTP without configuration."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.sim.stack import REGISTRY_CONFIG as CONFIG  # the one `launch sim up` writes


def _binary() -> str:
    found = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if found:
        return found
    proc = subprocess.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq --no-install-recommends docker-registry",
        shell=True,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not Path("/usr/bin/docker-registry").exists():
        pytest.fail(
            "these tests need an image registry and apt-get could not install Debian's "
            f"docker-registry:\n{proc.stderr[-2000:]}\n(or put `docker-registry` on PATH)",
            pytrace=False,
        )
    return "/usr/bin/docker-registry"


def catalog(address: str) -> dict[str, list[str]]:
    """{repository: [tags]} of everything the registry holds."""

    def get(path: str) -> dict[str, list[str]]:
        with urllib.request.urlopen(f"http://{address}/v2/{path}", timeout=10) as r:
            return json.loads(r.read())

    repos = get("_catalog").get("repositories") or []
    return {repo: sorted(get(f"{repo}/tags/list").get("tags") or []) for repo in repos}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a registry serving on 127.0.0.1, with its storage in a temporary folder."""
    binary = _binary()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(CONFIG.format(root=folder / "data", port=port))
    log = (folder / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the registry did not answer: {(folder / 'registry.log').read_text()}",
                    pytrace=False,
                )
            time.sleep(0.1)
    yield address
    proc.terminate()
    proc.wait(10)
    log.close()
