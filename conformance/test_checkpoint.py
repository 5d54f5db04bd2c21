"""checkpoint: `checkpoint` and `restore` with CRIU, as runc defines them (the spec has no
such operations): a dumped container is gone, and the restored one goes on with its
memory, open files, sockets and terminal as they were.

Each container writes what it does to a bind-mounted host directory (its stdio is
/dev/null: CRIU cannot dump a host file the harness would otherwise point it at).
The cases need a CRIU that works on this kernel (`criu check`); where it does not
(e.g. Debian 12's CRIU on a kernel newer than it knows), they are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conformance import procfs
from conformance.cases import case, needs
from conformance.runner import wait_for


def _criu_problem() -> str:
    criu = shutil.which("criu")
    if criu is None:
        return "criu is not installed"
    done = subprocess.run([criu, "check"], capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]
        return f"criu check fails on this kernel: {(errors or ['?'])[0].strip()}"
    return ""


CRIU_PROBLEM = _criu_problem() if os.geteuid() == 0 else "needs root"
pytestmark = [pytest.mark.root, needs("checkpoint"),
              pytest.mark.skipif(bool(CRIU_PROBLEM), reason=CRIU_PROBLEM or "criu works")]

COUNT = "i=0; while :; do i=$((i+1)); echo $i >>/out/count; sleep 0.1; done"


def _numbers(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split() if x.isdigit()]
    except FileNotFoundError:
        return []


def _lines(path: str) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _bundle(h, script: str, terminal: bool = False, rootfs=None) -> tuple[str, str]:
    """A bundle running `script` with the host directory it returns bound on /out."""
    out = h.mkdir(h.info.next_name("out-"))

    def edit(cfg):
        cfg["process"]["terminal"] = terminal
        cfg["linux"]["cgroupsPath"] = h.cgroup_name("cr")
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": out,
                              "options": ["rbind", "rw"]})
    return h.bundle(["sh", "-c", script], edit=edit, rootfs=rootfs), out


def _run(h, bundle: str) -> str:
    """`run -d` with /dev/null as stdio; the container's ID."""
    cid = h.cid()
    with open(os.devnull, "wb") as null:
        r = h.rt("run", "-d", "--bundle", bundle, cid, stdout=null, stderr=null)
    assert r.ok, f"run -d {cid}: {r}"
    h.track(h.rt.state(cid)["pid"])
    return cid


def _checkpoint(h, cid: str) -> str:
    images = h.path(f"images-{cid}")
    r = h.rt("checkpoint", "--image-path", images, cid, timeout=300)
    assert r.ok, f"checkpoint {cid}: {r}"
    assert h.rt.status(cid) is None, "a checkpoint without --leave-running keeps the container"
    return images


def _restore(h, cid: str, bundle: str, images: str, *extra: str) -> None:
    with open(os.devnull, "wb") as null:
        r = h.rt("restore", "-d", "--image-path", images, "--bundle", bundle, *extra, cid,
                 stdout=null, timeout=300)
    assert r.ok, f"restore {cid}: {r}"
    assert h.rt.status(cid) == "running"
    h.track(h.rt.state(cid)["pid"])


def _grows(read, since: int, by: int = 3, timeout: float = 30) -> bool:
    return wait_for(lambda: len(read()) >= since + by, timeout)


@case("CR-01", "runc: checkpoint, restore", "RUNC")
def test_counter_continues(h):
    """a counting process restored from its checkpoint goes on from where it stopped"""
    bundle, out = _bundle(h, COUNT)
    count = os.path.join(out, "count")
    cid = _run(h, bundle)
    assert _grows(lambda: _numbers(count), 0, by=5)
    images = _checkpoint(h, cid)
    stopped = _numbers(count)
    assert os.path.exists(os.path.join(images, "pstree.img")), os.listdir(images)
    _restore(h, cid, bundle, images)
    assert _grows(lambda: _numbers(count), len(stopped))
    after = _numbers(count)[len(stopped):]
    assert after[0] == stopped[-1] + 1, (stopped[-3:], after[:3])
    pid = h.rt.state(cid)["pid"]
    assert procfs.alive(pid)
    h.rt("kill", cid, "KILL")
    assert h.rt.wait_status(cid, "stopped", 10)
    h.rt("delete", cid)


@case("CR-02", "runc: checkpoint, restore", "RUNC")
def test_open_file_keeps_its_position(h):
    """a file the process has open comes back open at the same offset"""
    def lines(rootfs):
        with open(os.path.join(rootfs, "lines"), "w") as f:
            f.write("".join(f"line{i}\n" for i in range(1, 100001)))
    script = "exec 3</lines; while read -r l <&3; do echo $l >>/out/read; sleep 0.1; done"
    bundle, out = _bundle(h, script, rootfs=lines)
    read = os.path.join(out, "read")
    cid = _run(h, bundle)
    assert _grows(lambda: _lines(read), 0, by=5)
    images = _checkpoint(h, cid)
    stopped = _lines(read)
    _restore(h, cid, bundle, images)
    assert _grows(lambda: _lines(read), len(stopped))
    after = _lines(read)[len(stopped):]
    last = int(stopped[-1].removeprefix("line"))
    assert after[0] == f"line{last + 1}", (stopped[-3:], after[:3])
    h.rt("delete", "--force", cid)


@case("CR-03", "runc: checkpoint, restore", "RUNC")
def test_bound_unix_socket_keeps_receiving(h):
    """a unix socket bound to a path (syslogd's /dev/log) still receives after restore"""
    script = ("syslogd -n -O /out/messages & "
              "i=0; while :; do i=$((i+1)); logger -t cr msg$i; sleep 0.2; done")
    bundle, out = _bundle(h, script)
    messages = os.path.join(out, "messages")
    cid = _run(h, bundle)

    def logged():
        return [ln for ln in _lines(messages) if " cr: msg" in ln]
    assert _grows(logged, 0, by=3)
    images = _checkpoint(h, cid)
    stopped = logged()
    _restore(h, cid, bundle, images)
    assert _grows(logged, len(stopped), timeout=40)
    last = int(stopped[-1].rsplit("msg", 1)[1])
    after = [int(ln.rsplit("msg", 1)[1]) for ln in logged()[len(stopped):]]
    assert after[0] == last + 1, (stopped[-2:], after[:3])
    h.rt("delete", "--force", cid)


@case("CR-04", "runc: restore --console-socket", "RUNC")
@needs("terminal")
def test_terminal_container(h):
    """a terminal container restored with --console-socket gets a new pty master there
    and goes on writing to its terminal"""
    bundle, out = _bundle(h, "i=0; while :; do i=$((i+1)); echo $i >>/out/count; "
                             "echo tick$i; sleep 0.1; done", terminal=True)
    count = os.path.join(out, "count")
    rx = h.console()
    c = h.create(bundle, extra=("--console-socket", rx.path))
    assert rx.received.wait(10), "no pty master on the console socket"
    c.start()
    rx.wait_output("tick3")
    images = _checkpoint(h, c.cid)
    stopped = _numbers(count)
    again = h.console()
    _restore(h, c.cid, bundle, images, "--console-socket", again.path)
    assert again.received.wait(10), "restore sent no pty master to --console-socket"
    assert _grows(lambda: _numbers(count), len(stopped))
    after = _numbers(count)[len(stopped):]
    assert after[0] == stopped[-1] + 1, (stopped[-3:], after[:3])
    again.wait_output(f"tick{after[-1] + 1}", timeout=20)
    pid = h.rt.state(c.cid)["pid"]
    assert all("/dev/pts/" in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in range(3))
    h.rt("delete", "--force", c.cid)
