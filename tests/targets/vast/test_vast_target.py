"""`VastTarget` and its client in-process against the Vast emulator: faults and edge cases.

The end-to-end runs through the CLI live in test_vast_run.py and the contract suite; here the
target is driven step by step (advance + status, as the orchestrator does) so each fault lands
at a known moment.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import TargetError, TargetUnavailableError
from launcher.orchestrator import Orchestrator
from launcher.sim.vast import VastSim
from launcher.spec import load_spec
from launcher.state import AttemptEnd, RunStatus
from launcher.store import RunStore
from launcher.store.identity import store_key
from launcher.targets.base import AttemptSpec, Phase, TargetStatus
from launcher.targets.vast.client import VastClient, VastInstance
from launcher.targets.vast.offers import offer_query
from launcher.targets.vast.options import VastOptions
from launcher.targets.vast.ssh import HostKeyChangedError, SshConn, ensure_key
from launcher.targets.vast.target import VastTarget
from tests.conftest import REPO
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import KEY

vast_sim = vast_fixtures.vast_sim


class _Ledger:
    def __init__(self) -> None:
        self.intents: list[tuple[str, str]] = []
        self.made: list[str | None] = []

    def intent(self, kind: str, native_id: str, data: Mapping[str, Any] | None = None) -> int:
        self.intents.append((kind, native_id))
        return len(self.intents)

    def created(self, ticket: int, native_id: str | None = None) -> None:
        self.made.append(native_id)


def _spec(*overrides: str) -> Any:
    return load_spec(REPO / "jobs" / "hello.yaml", profile="smoke", overrides=list(overrides))


@pytest.fixture
def target(vast_sim: VastSim, base_image: str, launch_home: Path) -> Iterator[VastTarget]:
    t = VastTarget(launch_home, client=VastClient(vast_sim.url, KEY, sleep=lambda _s: None))
    yield t
    left = vast_sim.instances()
    for row in left:
        vast_fixtures.api(vast_sim, "DELETE", f"/api/v0/instances/{row['id']}/", {})
    assert not left, f"instances left behind: {[r['id'] for r in left]}"


class Run:
    """A prepared job and its first attempt's handle, driven as the orchestrator would."""

    def __init__(self, target: VastTarget, base_image: str, tmp: Path, *overrides: str) -> None:
        spec = _spec(f"targets.vast.image={base_image}", *overrides)
        self.prepared = target.prepare(spec, f"t-{time.monotonic_ns()}", tmp)
        ledger = _Ledger()
        self.handle = target.submit(self.prepared, ledger, AttemptSpec(), None)
        label = f"launch:{store_key(target.home)}:{self.prepared.run_id}"
        assert ledger.intents == [("instance", label)]
        assert ledger.made == [str(self.handle.instance_id)]
        self.target = target

    def drive(self, until: set[Phase], timeout: float = 60) -> TargetStatus:
        """advance + status, as the orchestrator polls, until the phase is one of `until`."""
        end = time.monotonic() + timeout
        st = self.target.status(self.handle)
        while time.monotonic() < end:
            self.handle = self.target.advance(self.prepared, self.handle, _Ledger()) or self.handle
            st = self.target.status(self.handle)
            if st.phase in until:
                return st
            time.sleep(0.2)
        raise AssertionError(f"still {st.phase} after {timeout}s: {st.message}")


# ---- offers and the client ----------------------------------------------------------------------


def test_offer_query_holds_every_hard_need_of_the_job() -> None:
    spec = _spec(
        "resources.gpu.count=1",
        "resources.gpu.types=[RTX_4090, T4]",
        "resources.gpu.min_vram_gb=16",
        "resources.disk_gb=50",
    )
    opts = VastOptions(max_dph=0.8, min_reliability=0.98, min_cuda="12.1", min_inet_down_mbps=200)
    q = offer_query(spec, opts)
    assert q["num_gpus"] == {"eq": 1}
    assert q["gpu_name"] == {"in": ["RTX 4090", "Tesla T4"]}
    assert q["gpu_ram"] == {"gte": 16000}
    assert q["disk_space"] == {"gte": 50.0} and q["allocated_storage"] == 50.0
    assert q["cuda_max_good"] == {"gte": 12.1}
    assert q["reliability"] == {"gte": 0.98}
    assert q["dph_total"] == {"lte": 0.8}
    assert q["inet_down"] == {"gte": 200}
    assert q["type"] == "on-demand" and q["order"] == [["dph_total", "asc"]]
    assert offer_query(spec, VastOptions(interruptible=True))["type"] == "bid"


def test_search_through_the_emulator_filters_and_orders(vast_sim: VastSim) -> None:
    spec = _spec("resources.gpu.count=1", "resources.gpu.types=[RTX_4090]")
    offers = VastClient(vast_sim.url, KEY).search_offers(
        offer_query(spec, VastOptions(min_reliability=0.99))
    )
    assert offers and {o["gpu_name"] for o in offers} == {"RTX 4090"}
    assert all(o["reliability"] >= 0.99 for o in offers)
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)


def test_client_retries_429_and_5xx_honouring_retry_after(vast_sim: VastSim) -> None:
    waits: list[float] = []
    client = VastClient(vast_sim.url, KEY, sleep=waits.append)
    vast_sim.fail_next(2, 429, retry_after=3)
    assert client.search_offers({"limit": 1})
    assert waits == [3, 3]
    vast_sim.fail_next(client.retries + 1, 503, retry_after=None)  # all of them, no more
    with pytest.raises(TargetError, match="503"):
        client.search_offers({"limit": 1})
    assert len(waits) == 2 + client.retries  # bounded, backing off
    assert waits[2:] == sorted(waits[2:]) and waits[-1] > waits[2]


def test_a_missing_api_key_says_where_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TargetUnavailableError) as e:
        VastClient("http://127.0.0.1:9")
    assert "manage-keys" in (e.value.hint or "")
    assert not VastTarget.check().ok


def test_a_wrong_key_is_a_clear_error(vast_sim: VastSim) -> None:
    with pytest.raises(TargetUnavailableError, match="refused the API key"):
        VastClient(vast_sim.url, "wrong-key").search_offers({})


# ---- faults on a running instance ---------------------------------------------------------------


def test_a_changed_host_key_is_refused(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    run = Run(target, base_image, tmp_path, "run=sleep 30")
    run.drive({Phase.RUNNING})
    handle = run.handle
    assert (handle.host_key or "").startswith("ssh-ed25519 ")
    iid = handle.instance_id
    container = vast_sim.machine_handle(iid)
    assert container
    # the machine now answers with other host keys (a different machine, or a MITM)
    subprocess.run(
        ["docker", "exec", container, "sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A"],
        check=True,
        capture_output=True,
    )
    vast_sim.drop_ssh(iid)
    vast_sim.restore_ssh(iid)
    fresh = VastTarget(launch_home, client=target.client)  # e.g. `launch pull` later
    with pytest.raises(HostKeyChangedError, match="host key"):
        fresh.pull(handle, tmp_path / "out")
    target.cleanup(handle)


def test_preemption_mid_run_ends_the_attempt_and_cleanup_frees_it(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path
) -> None:
    run = Run(
        target, base_image, tmp_path, "run=python3 -m hello.train --epochs 60 --epoch-seconds 0.5"
    )
    run.drive({Phase.RUNNING})
    vast_sim.preempt(run.handle.instance_id)
    # the target only says so: the next attempt is the orchestrator's to start
    st = run.drive({Phase.PREEMPTED}, timeout=10)
    assert st.stop_reason == "outbid" and "pre-empted" in st.message
    assert target.advance(run.prepared, run.handle, _Ledger()) is None  # it rents nothing
    target.cleanup(run.handle)
    target.cleanup(run.handle)  # idempotent, silent when gone
    assert vast_sim.instance(run.handle.instance_id) is None


def test_ssh_drop_mid_log_loses_and_doubles_no_line(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path
) -> None:
    run = Run(
        target, base_image, tmp_path, "run=python3 -m hello.train --epochs 8 --epoch-seconds 0.5"
    )
    run.drive({Phase.RUNNING})
    handle = run.handle
    iid = handle.instance_id
    lines: list[str] = []
    cursor = 0
    dropped = False
    end = time.monotonic() + 60
    while time.monotonic() < end:
        got, cursor = target.read_logs(handle, cursor)
        lines += [ln.text for ln in got]
        if not dropped and any(t.startswith("epoch 2/") for t in lines):
            vast_sim.drop_ssh(iid)
            st = target.status(handle)
            assert st.phase is Phase.RUNNING, st  # unreachable is not lost (yet)
            vast_sim.restore_ssh(iid)
            dropped = True
        if target.status(handle).finished:
            got, cursor = target.read_logs(handle, cursor)
            lines += [ln.text for ln in got]
            break
        time.sleep(0.3)
    assert dropped
    epochs = [t.split()[1] for t in lines if t.startswith("epoch ")]
    assert epochs == [f"{i}/8" for i in range(1, 9)]
    target.cleanup(handle)


def test_an_instance_that_dies_before_the_job_starts_is_replaced_never_doubled(
    vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    """Through the orchestrator: the dead instance ends attempt 1, is destroyed, and only then
    is another offer (not the same one) rented for attempt 2."""
    client = VastClient(vast_sim.url, KEY, sleep=lambda _s: None)
    target = VastTarget(launch_home, client=client)
    seen: list[list[int]] = []
    submit = target.submit

    def watched_submit(prepared: Any, ledger: Any, attempt: Any, previous: Any) -> Any:
        seen.append([r["id"] for r in vast_sim.instances()])  # what is billed as we rent
        handle = submit(prepared, ledger, attempt, previous)
        if attempt.number == 1:  # its container dies before the job starts
            vast_fixtures.wait_for(
                "a machine", lambda: vast_sim.machine_handle(handle.instance_id), 30
            )
            vast_sim.exit(handle.instance_id)
        return handle

    target.submit = watched_submit  # type: ignore[method-assign]
    orch = Orchestrator(RunStore(launch_home), target, poll_s=0.2)
    spec = _spec(f"targets.vast.image={base_image}")
    orch.start(spec, output_dir=tmp_path / "out", run_id="dies-early")
    rec = orch.supervise("dies-early")
    assert rec.status is RunStatus.SUCCEEDED, rec.message
    assert seen == [[], []], "attempt 2 was rented while attempt 1's instance still existed"
    first, second = rec.attempts
    assert first.end is AttemptEnd.PREEMPTED and "before the job started" in first.message
    assert second.end is AttemptEnd.SUCCEEDED
    offer = lambda w: w.split("offer ")[1].split(",")[0]  # noqa: E731
    assert offer(first.where) != offer(second.where)
    assert vast_sim.instances() == []


def test_cancel_stops_the_job_with_a_checkpoint_and_pulls_are_incremental(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path
) -> None:
    run = Run(
        target, base_image, tmp_path, "run=python3 -m hello.train --epochs 60 --epoch-seconds 0.3"
    )
    run.drive({Phase.RUNNING})
    handle = run.handle
    dest = tmp_path / "out"
    end = time.monotonic() + 60
    while not target.pull(handle, dest).copied or not any((dest / "checkpoints").glob("*")):
        assert time.monotonic() < end, "no checkpoint pulled"
        time.sleep(0.5)
    target.cancel(handle)
    target.cancel(handle)  # idempotent
    st = run.drive({Phase.STOPPED, Phase.DONE, Phase.FAILED, Phase.LOST})
    assert st.phase is Phase.STOPPED and st.stop_reason in ("signal", "control"), st
    first = target.pull(handle, dest)
    assert first.copied  # the final checkpoint and log
    again = target.pull(handle, dest)
    assert again.copied == [] and again.skipped_unchanged > 0
    assert (dest / "status.json").is_file() and (dest / "logs" / "job.log").is_file()
    target.cleanup(handle)


def test_gc_destroys_an_instance_this_store_labelled_that_no_run_knows(
    vast_sim: VastSim, base_image: str, launch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher import api
    from launcher.gc import apply_gc, plan_gc

    monkeypatch.setenv("LAUNCH_VAST_URL", vast_sim.url)
    monkeypatch.setenv("VAST_API_KEY", KEY)
    made = vast_fixtures.Instances(vast_sim)
    iid = made.create(image=base_image, label=f"launch:{store_key(launch_home)}:ghost-123456")
    other = made.create(image=base_image, label="not-ours")
    try:
        for i in (iid, other):  # booted (a destroy mid-boot races in the emulator's docker)
            vast_fixtures.wait_status(vast_sim, i, "running")
        session = api.Session(home=launch_home)
        plan = plan_gc(session, ["vast"])
        assert [(a.kind, a.native_id) for a in plan.actions] == [("remove-stray", str(iid))]
        apply_gc(session, plan.actions)
        assert vast_sim.instance(iid) is None and vast_sim.instance(other) is not None
    finally:
        made.destroy_all()


def test_an_interruptible_run_records_the_price_it_really_pays(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path
) -> None:
    spec = _spec("targets.vast.interruptible=true")
    [planned, *_] = target.plan(spec).options
    run = Run(target, base_image, tmp_path, "targets.vast.interruptible=true", "run=sleep 30")
    run.drive({Phase.RUNNING})
    handle = run.handle
    row = vast_sim.instance(handle.instance_id)
    assert row is not None and row["is_bid"]
    # the bid (5% over the floor the search showed) plus storage, as the instance bills it
    assert float(handle.price_per_hour or 0) == pytest.approx(row["dph_total"])
    assert handle.dph_total == pytest.approx(row["dph_total"])
    assert planned.name == str(handle.offer_id)
    assert planned.price_per_hour == pytest.approx(row["dph_total"], abs=1e-4)
    target.cleanup(handle)


@contextmanager
def instance(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, home: Path
) -> Iterator[tuple[SshConn, int]]:
    """A running job's instance and an SSH connection to it as the target makes one (pinned
    host key, the launcher's key); the instance is released at the end."""
    run = Run(target, base_image, tmp_path, "run=sleep 120")
    run.drive({Phase.RUNNING})
    handle = run.handle
    row = vast_sim.instance(handle.instance_id)
    assert row is not None
    addr = VastInstance.model_validate(row).ssh_address()
    assert addr is not None
    conn = SshConn(*addr, ensure_key(home)[0], host_key=handle.host_key)
    try:
        yield conn, handle.instance_id
    finally:
        conn.close()
        target.cleanup(handle)
