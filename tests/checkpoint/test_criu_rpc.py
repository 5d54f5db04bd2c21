"""A container with a terminal goes through CRIU's RPC (`criu swrk`): the protobuf
messages, the translation of ocirt's CRIU options into `criu_opts`, and the
"orphan-pts-master" notification whose pty master restore hands to --console-socket.

A fake `criu swrk` (Python, no CRIU) records the request it gets; for a restore it
sends a pty master with the notification, waits for the answer and reports a process
it started as the restored init. So this runs on any host; the real round trip of a
terminal container is the conformance case CR-04 (in the test-host guest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conformance import procfs
from conformance.console import ConsoleReceiver
from conformance.runner import Runtime
from ocirt.runtime import criu_rpc
from tests.checkpoint.helpers import root_can_be_made_slave

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAKE_SWRK = r"""#!{python}
import json, os, socket, struct, subprocess, sys
sys.path.insert(0, {repo!r})
from ocirt.runtime.criu_rpc import decode, field
if sys.argv[1] == "check":
    sys.exit(0)
assert sys.argv[1] == "swrk", sys.argv
sk = socket.socket(fileno=int(sys.argv[2]))
req = decode(sk.recv(1 << 20))
opts = decode(req[2][0])
def plain(v):
    return v.hex() if isinstance(v, bytes) else v
record = {{"argv": sys.argv, "type": req[1][0],
          "opts": {{str(k): [plain(x) for x in v] for k, v in opts.items()}},
          "cgroup": open("/proc/self/cgroup").read()}}
if req[1][0] == 2:  # restore: hand a new master over, as CRIU does for an orphan slave
    master, slave = os.openpty()
    note = field(1, 6) + field(2, True) + field(5, field(1, "orphan-pts-master"))
    sk.sendmsg([note], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))])
    os.close(master)
    record["reply"] = {{str(k): v for k, v in decode(sk.recv(4096)).items()}}
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x20000000) == 0  # CLONE_NEWPID: the "init" is pid 1 of its own
    init = subprocess.Popen(["sleep", "1000"], stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    sk.send(field(1, 2) + field(2, True) + field(4, field(1, init.pid)))
else:  # dump: refuse, as CRIU does when it cannot
    sk.send(field(1, req[1][0]) + field(2, False) + field(9, "the fake criu refuses"))
with open(os.environ["RECORD"], "w") as f:
    json.dump(record, f)
"""


def test_protobuf_fields_round_trip():
    msg = (criu_rpc.field(1, 2) + criu_rpc.field(2, True) + criu_rpc.field(9, "x" * 300)
           + criu_rpc.field(4, criu_rpc.field(1, 123456)))
    got = criu_rpc.decode(msg)
    assert got[1] == [2] and got[2] == [1] and got[9] == [b"x" * 300]
    assert criu_rpc.decode(got[4][0]) == {1: [123456]}
    with pytest.raises(ValueError, match="truncated"):
        criu_rpc.decode(msg[:-1])


def test_command_line_words_become_criu_opts(tmp_path):
    opts = criu_rpc.Options(["-d", "--pidfile", "/x/pid", "--root", "/r", "-D", str(tmp_path),
                             "-v4", "--manage-cgroups=full", "--empty-ns", "net",
                             "--tcp-established", "--external", "mnt[/out]:/src",
                             "--inherit-fd", "fd[5]:extRootNetNS",
                             "--join-ns", "uts:/proc/1/ns/uts"], "restore.log",
                            str(tmp_path))
    try:
        opts.add(["--cgroup-root", "/a/b", "--cgroup-root", "cpu,cpuacct:/c"])
        got = criu_rpc.decode(opts.body)
        assert got[10] == [b"restore.log"] and got[50] == [1] and got[12] == [1]
        assert got[13] == [b"/r"] and got[9] == [4] and got[34] == [4]  # FULL
        assert got[38] == [0x40000000] and got[5] == [1]
        assert got[37] == [b"mnt[/out]:/src"] and 17 not in got
        # the work directory by path, in CRIU's RPC configuration file
        conf = got[51][0].decode()
        assert os.path.dirname(conf) == str(tmp_path)
        with open(conf) as f:
            assert f.read() == f'work-dir "{tmp_path}"\n'

        assert os.path.samefile(f"/proc/self/fd/{got[1][0]}", tmp_path)
        assert [criu_rpc.decode(x) for x in got[27]] == [{1: [b"extRootNetNS"], 2: [5]}]
        assert [criu_rpc.decode(x) for x in got[39]] == [{1: [b"uts"],
                                                          2: [b"/proc/1/ns/uts"]}]
        assert [criu_rpc.decode(x) for x in got[25]] == [{2: [b"/a/b"]},
                                                         {1: [b"cpu,cpuacct"], 2: [b"/c"]}]
    finally:
        opts.close()
    assert not os.path.exists(conf)
    with pytest.raises(Exception, match="--made-up has no RPC equivalent"):
        criu_rpc.Options(["-D", str(tmp_path), "--made-up", "x"], "r.log",
                         str(tmp_path))
    assert os.listdir(tmp_path) == []  # nothing left by a refusal


@pytest.fixture
def fake_swrk(tmp_path):
    path = tmp_path / "fake-criu"
    path.write_text(FAKE_SWRK.format(python=sys.executable, repo=REPO))
    path.chmod(0o755)
    return str(path), str(tmp_path / "record.json")


def _terminal_bundle(bundle):
    def edit(cfg):
        cfg["process"]["terminal"] = True
    return bundle(["sh", "-c", "echo up; exec sleep 1000"], edit=edit)


@pytest.mark.root
@pytest.mark.skipif(not root_can_be_made_slave(), reason="/ is not a mount point here (a "
                    "chroot): restore refuses, CRIU cannot get a mount namespace of its own")
def test_terminal_restore_hands_the_new_master_to_the_console_socket(
        ocirt, bundle, tmp_path, fake_swrk):
    binary, record = fake_swrk
    b = _terminal_bundle(bundle)
    images = tmp_path / "images"
    images.mkdir()
    (images / "descriptors.json").write_text(json.dumps(["/dev/pts/0"] * 3))
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    env = {**os.environ, "RECORD": record}
    r = rt("restore", "-d", "--image-path", str(images), "--bundle", b, "rpc1", env=env)
    assert r.rc == 1 and "cannot allocate tty" in r.err, r  # no --console-socket
    assert rt.status("rpc1") is None
    sock_dir = tmp_path / "cs"
    sock_dir.mkdir()
    rx = ConsoleReceiver(str(sock_dir / "s"))
    bystander = None
    try:
        r = rt("restore", "-d", "--image-path", str(images), "--bundle", b,
               "--console-socket", rx.path, "rpc1", env=env)
        assert r.ok, r
        assert rx.received.wait(10), "no pty master on the console socket"
        with open(record) as f:
            seen = json.load(f)
        assert seen["argv"][1] == "swrk" and seen["type"] == 2
        opts = seen["opts"]
        assert opts["50"] == [1] and opts["12"] == [1]  # orphan_pts_master, notify
        assert bytes.fromhex(opts["13"][0]).decode().endswith("/rpc1/criu-root")
        assert seen["reply"] == {"1": [6], "3": [1]}  # NOTIFY answered with success
        state = rt.state("rpc1")
        assert state["status"] == "running"
        with open(os.path.join(b, "config.json")) as f:
            cgpath = json.load(f)["linux"]["cgroupsPath"]
        assert cgpath in seen["cgroup"]  # swrk too ran in the container's cgroup
        # the process the fake reported is the container's, on the pty we got
        assert os.readlink(f"/proc/{state['pid']}/fd/1").startswith("/dev/pts/")
        # a process of ours beside it is no part of the container: delete leaves it be
        bystander = subprocess.Popen(["sleep", "1000"])
        assert rt("delete", "--force", "rpc1").ok
        assert procfs.wait_gone(state["pid"], 10)
        assert bystander.poll() is None
    finally:
        rt("delete", "--force", "rpc1")
        rx.close()
        if bystander is not None:
            bystander.kill()
            bystander.wait()
    assert rt.ids() == []


@pytest.mark.root
def test_terminal_dump_goes_over_rpc_and_a_refusal_keeps_it_running(
        ocirt, bundle, tmp_path, fake_swrk):
    binary, record = fake_swrk
    b = _terminal_bundle(bundle)
    sock_dir = tmp_path / "cs"
    sock_dir.mkdir()
    rx = ConsoleReceiver(str(sock_dir / "s"))
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    try:
        r = rt("run", "-d", "--console-socket", rx.path, "--bundle", b, "rpc2")
        assert r.ok, r
        rx.wait_output("up")
        pid = rt.state("rpc2")["pid"]
        r = rt("checkpoint", "--image-path", str(tmp_path / "images"), "rpc2",
               env={**os.environ, "RECORD": record})
        assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r
        assert "criu failed: dump: the fake criu refuses" in r.err, r.err
        with open(record) as f:
            seen = json.load(f)
        assert seen["type"] == 1 and seen["opts"]["2"] == [pid]  # DUMP of the init
        assert seen["opts"]["50"] == [1]
        assert rt.status("rpc2") == "running" and rt.state("rpc2")["pid"] == pid
    finally:
        rt("delete", "--force", "rpc2")
        rx.close()
    assert procfs.wait_gone(pid, 10)
