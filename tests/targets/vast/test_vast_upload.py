"""Uploads to a Vast instance (the emulator's: a real container with a real sshd): by manifest
diff, hash-verified; job inputs; and which instances `launch gc` may call ours."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launcher.errors import TargetError
from launcher.sim.vast import VastSim
from launcher.store.identity import store_key
from launcher.sync import pull_tree, push_tree, sha256_file, tree_files
from launcher.targets.base import Phase
from launcher.targets.vast.client import VastInstance
from launcher.targets.vast.lifecycle import run_label
from launcher.targets.vast.sftp import SftpDest
from launcher.targets.vast.ssh import SshConn, SshUnreachableError, ensure_key
from launcher.targets.vast.stream import ShellTree
from launcher.targets.vast.target import VastTarget
from tests.sim import vast_fixtures
from tests.sim.vast_fixtures import Instances
from tests.targets.vast.test_vast_target import Run, instance, target

vast_sim = vast_fixtures.vast_sim
instances = vast_fixtures.instances
__all__ = ["target"]  # the fixture, imported for pytest


def test_reupload_after_one_changed_file_sends_only_that_file(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    with instance(target, vast_sim, base_image, tmp_path, launch_home) as (conn, _iid):
        local = tmp_path / "workload"
        for i in range(100):  # 100 files, 20 MB
            path = local / f"part{i // 10}" / f"f{i:03d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(200_000))
        (local / "part0" / "f000.bin").chmod(0o755)  # modes travel: scripts stay executable
        dest = SftpDest(conn, "/workspace/push-test")
        full = push_tree(tree_files(local), dest)
        assert len(full.sent) == 100 and full.bytes_sent == 20_000_000
        conn.check("test -x /workspace/push-test/part0/f000.bin")
        conn.check("test ! -x /workspace/push-test/part0/f001.bin")
        (local / "part3" / "f031.bin").write_bytes(os.urandom(200_000))
        again = push_tree(tree_files(local), dest)
        assert again.sent == ["part3/f031.bin"] and again.skipped_unchanged == 99
        assert again.bytes_sent / full.bytes_sent < 0.05
        # what arrived is what we have (the push checked it; so do we, independently)
        remote = conn.check("cd /workspace/push-test && sha256sum part3/f031.bin part9/f099.bin")
        got = dict(reversed(line.split()) for line in remote.splitlines())
        for rel in ("part3/f031.bin", "part9/f099.bin"):
            assert (
                got[rel] == subprocess.check_output(["sha256sum", local / rel]).split()[0].decode()
            )
        # a file damaged on the instance is found by its hash and sent again
        conn.check("printf x >> /workspace/push-test/part5/f050.bin")
        assert push_tree(tree_files(local), dest).sent == ["part5/f050.bin"]
        # names with spaces and non-ASCII, and an empty file, travel as they are
        (local / "odd dir ü").mkdir()
        (local / "odd dir ü" / "naïve 名前.txt").write_text("grüße")
        (local / "empty.txt").write_bytes(b"")
        odd = push_tree(tree_files(local), dest)
        assert sorted(odd.sent) == ["empty.txt", "odd dir ü/naïve 名前.txt"]
        assert conn.check("cat '/workspace/push-test/odd dir ü/naïve 名前.txt'") == "grüße"
        conn.check(
            "test -f /workspace/push-test/empty.txt && test ! -s /workspace/push-test/empty.txt"
        )
        assert not conn.check("find /workspace/push-test -name '*.launch-tmp'")
        # a receiver that fails (here: its folder is a file) says why, early or late in the
        # stream, and is not taken for a dropped connection (retried, then "unreachable")
        conn.check("printf x > /workspace/not-a-dir")
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(30_000_000))  # more than the channel's window: cut mid-send
        for f in (local / "empty.txt", big):
            with pytest.raises(TargetError, match="Not a directory") as info:
                SftpDest(conn, "/workspace/not-a-dir").put_many([(f, "sub/x.bin")])
            assert not isinstance(info.value, SshUnreachableError)
        # and back, in one stream, each file checked against the sender's hash of what it sent
        conn.check("head -c 3000001 /dev/urandom > /workspace/push-test/part0/big.bin")
        back = tmp_path / "back"
        pulled = pull_tree(ShellTree(conn, "/workspace/push-test"), back)
        assert len(pulled.copied) == 103 and not pulled.changed_during_copy
        for rel in ("part0/big.bin", "part5/f050.bin"):
            theirs = conn.check(f"sha256sum /workspace/push-test/{rel}").split()[0]
            assert sha256_file(back / rel) == theirs
        assert (back / "part0" / "big.bin").stat().st_size == 3000001


def test_job_inputs_are_uploaded_to_the_input_dir(
    target: VastTarget, base_image: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.txt").write_text("beta\n")
    (data / ".meta").write_text("dotfiles are data too\n")
    single = tmp_path / "labels.csv"
    single.write_text("x,y\n")
    run = Run(
        target,
        base_image,
        tmp_path,
        f"inputs=[{{path: {data}, as: corpus}}, {{path: {single}, as: meta}}]",
        'run=sh -c \'cat "$LAUNCH_INPUT_DIR/corpus/a.txt" "$LAUNCH_INPUT_DIR/corpus/sub/b.txt" '
        '"$LAUNCH_INPUT_DIR/meta/labels.csv" "$LAUNCH_INPUT_DIR/corpus/.meta" '
        '> "$LAUNCH_OUTPUT_DIR/seen.txt"\'',
    )
    st = run.drive({Phase.DONE, Phase.FAILED, Phase.LOST})
    handle = run.handle
    assert st.phase is Phase.DONE, st
    out = tmp_path / "out"
    target.pull(handle, out)
    seen = (out / "outputs" / "seen.txt").read_text()
    assert seen == "alpha\nbeta\nx,y\ndotfiles are data too\n"
    target.cleanup(handle)


def test_labelled_lists_only_instances_this_store_labelled(
    target: VastTarget, vast_sim: VastSim, instances: Instances, base_image: str
) -> None:
    ours = instances.create(
        image=base_image, label=run_label("hello-abc123", store_key(target.home))
    )
    other_store = instances.create(image=base_image, label=run_label("hello-def456", "0a1b2c3d"))
    older = instances.create(image=base_image, label="launch-hello-fed789")
    theirs = instances.create(image=base_image, label="my-launch-thing")
    bare = instances.create(image=base_image, label="launch-")
    found = {iid: run for iid, run, _state in target.labelled()}
    assert found == {str(ours): "hello-abc123"}
    foreign = {f.native_id: (f.run_id, f.owner) for f in target.not_ours()}
    assert foreign == {
        str(other_store): ("hello-def456", "0a1b2c3d"),
        str(older): ("hello-fed789", ""),
    }
    assert str(theirs) not in foreign and str(bare) not in foreign


def test_big_pulls_survive_re_keying(
    target: VastTarget, vast_sim: VastSim, base_image: str, tmp_path: Path, launch_home: Path
) -> None:
    """paramiko starting a re-key mid-stream can time out (paramiko#822: it did on the third
    256 MB pull of bench/vast_sync.py, timing-dependent), so our transport leaves re-keys to the
    server; a server that re-keys often must not break a pull."""
    from launcher.sim.vast.machines import SSHD_FLAGS

    run = Run(target, base_image, tmp_path, "run=sleep 60")
    run.drive({Phase.RUNNING})
    handle = run.handle
    iid = handle.instance_id
    row = vast_sim.instance(iid)
    assert row is not None
    addr = VastInstance.model_validate(row).ssh_address()
    assert addr is not None
    key = ensure_key(launch_home)[0]
    conn = SshConn(*addr, key, host_key=handle.host_key)
    try:
        transport = conn.connect().get_transport()
        assert transport is not None and transport.packetizer.REKEY_BYTES >= 1 << 60
        conn.check(
            "mkdir -p /workspace/rnd && head -c 48000000 /dev/urandom > /workspace/rnd/r.bin"
        )
        conn.close()
        # an sshd that re-keys every 8 MB
        vast_sim.drop_ssh(iid)
        container = vast_sim.machine_handle(iid)
        assert container
        restart = f"mkdir -p /run/sshd && /usr/sbin/sshd {SSHD_FLAGS} -o RekeyLimit=8M"
        subprocess.run(["docker", "exec", container, "sh", "-c", restart], check=True)
        conn = SshConn(*addr, key, host_key=handle.host_key)
        got = pull_tree(ShellTree(conn, "/workspace/rnd"), tmp_path / "rnd")
        assert got.copied == ["r.bin"]
        theirs = conn.check("sha256sum /workspace/rnd/r.bin").split()[0]
        assert sha256_file(tmp_path / "rnd" / "r.bin") == theirs
    finally:
        conn.close()
        target.cleanup(handle)
