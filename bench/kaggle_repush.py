"""Bytes a Kaggle re-push uploads after a one-file code change, against the whole bundle.

Kaggle has no partial dataset version: `CreateDatasetVersion` lists the new version's files by
upload token, each uploaded again (the `kaggle datasets version` CLI uploads the whole folder).
So the Kaggle target splits the bundle (launcher/targets/kaggle/datasets.py): its files of 1 MiB
or more go to an assets dataset, the rest to the bundle dataset. This script pushes a workload
(a repo workload plus a weights file, what a fine-tuning job ships) to the Kaggle emulator
through the target's own code (`split_bundle` + `ensure_dataset`, the official kagglesdk
underneath), edits one source file, pushes again, and reads the emulator's count of bytes
received. The baseline is the bundle pushed whole (the target before the split, and what any
one-dataset upload costs), in the same emulator run.

    .venv/bin/python bench/kaggle_repush.py [--workload violence] [--weights-mb 40] [--append]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vast_sync import machine, report  # noqa: E402
from launcher import agent, launch_fetch, launchkit  # noqa: E402
from launcher.bundle import build_bundle  # noqa: E402
from launcher.sim.kaggle import KaggleSim  # noqa: E402
from launcher.targets.kaggle.client import Credentials, KaggleClient  # noqa: E402
from launcher.targets.kaggle.datasets import ensure_dataset, split_bundle  # noqa: E402
from launcher.targets.kaggle.handle import BundleParts  # noqa: E402

USER, KEY = "alice", "0123456789abcdef"


class _Ledger:
    def intent(self, kind: str, native_id: str, data: Mapping[str, Any] | None = None) -> int:
        return 0

    def created(self, ticket: int, native_id: str | None = None) -> None:
        return None


def bundle(workload: Path, cache: Path) -> tuple[Path, str]:
    extras = {
        name: Path(mod.__file__ or "").read_bytes()
        for name, mod in (("agent.py", agent), ("launchkit.py", launchkit))
    }
    extras["launch_fetch.py"] = Path(launch_fetch.__file__ or "").read_bytes()
    extras["job.json"] = b'{"name": "bench"}'
    b = build_bundle(workload, cache, extras)
    return b.path, b.digest


def push(sim: KaggleSim, client: KaggleClient, job: str, parts: BundleParts, whole: bool) -> int:
    """Bytes the emulator received for one push of `parts` (split) or of the bundle whole."""
    before = sim.bytes_uploaded
    ledger, say = _Ledger(), lambda _m: None
    if whole:
        code = Path(parts.code[0])
        ensure_dataset(client, USER, f"launch-bundle-{job}-whole", code, code.name, ledger,
                       title=f"bench whole {job}", notify=say)  # fmt: skip
        return sim.bytes_uploaded - before
    ensure_dataset(client, USER, f"launch-bundle-{job}", Path(parts.code[0]), parts.code_file,
                   ledger, title=f"bench code {job}", notify=say)  # fmt: skip
    if parts.assets:
        ensure_dataset(client, USER, f"launch-assets-{job}", Path(parts.assets[0]),
                       parts.assets_file, ledger, title=f"bench assets {job}",
                       notify=say)  # fmt: skip
    return sim.bytes_uploaded - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="violence")
    parser.add_argument("--weights-mb", type=int, default=40)
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaggle-repush-") as tmp:
        work = Path(tmp)
        wl = work / args.workload
        shutil.copytree(ROOT / "workloads" / args.workload, wl,
                        ignore=shutil.ignore_patterns("__pycache__", ".venv"))  # fmt: skip
        (wl / "weights.pt").write_bytes(os.urandom(args.weights_mb << 20))
        sources = sorted(p for p in wl.rglob("*.py"))
        with KaggleSim(data_dir=work / "sim", runtime="process") as sim:
            client = KaggleClient(Credentials(USER, key=KEY), sim.url)
            b1, d1 = bundle(wl, work / "cache")
            p1 = split_bundle(b1, d1, work / "home")
            first_split = push(sim, client, args.workload, p1, whole=False)
            first_whole = push(sim, client, args.workload, BundleParts(code=(str(b1), d1)), True)
            edited = sources[0]
            edited.write_text(edited.read_text() + "\n# one line changed\n")
            b2, d2 = bundle(wl, work / "cache")
            p2 = split_bundle(b2, d2, work / "home")
            again_split = push(sim, client, args.workload, p2, whole=False)
            again_whole = push(sim, client, args.workload, BundleParts(code=(str(b2), d2)), True)
    rel = edited.relative_to(wl)
    lines = [
        f"### `bench/kaggle_repush.py` (--workload {args.workload} --weights-mb "
        f"{args.weights_mb})",
        "",
        "```",
        f"# kaggle_repush.py  {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# {machine()}",
        f"workloads/{args.workload} + a {args.weights_mb} MiB weights file, bytes the Kaggle "
        "emulator received:",
        f"  first push, split (code + assets)     {first_split / 1e6:10.3f} MB",
        f"  first push, whole bundle              {first_whole / 1e6:10.3f} MB",
        f"  after editing {rel}:",
        f"  re-push, split (the code part only)   {again_split / 1e6:10.3f} MB",
        f"  re-push, whole bundle (baseline)      {again_whole / 1e6:10.3f} MB",
        f"  ratio (whole / split)                 {again_whole / max(again_split, 1):10.1f}x",
        "```",
        "",
    ]
    report(lines, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
