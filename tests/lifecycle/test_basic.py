"""The five OCI operations on a real busybox container."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.root


def test_run_prints_from_inside(ocirt, bundle):
    b = bundle(["sh", "-c", "echo hello from $(hostname); id"])
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert "hello from conformance" in r.out
    assert "uid=0(root) gid=0(root)" in r.out
    assert ocirt.ids() == []


def test_create_start_state_kill_delete(ocirt, bundle, tmp_path):
    b = bundle(["sleep", "1000"])
    pidfile = tmp_path / "pid"
    ocirt("create", "--bundle", b, "--pid-file", str(pidfile), "c1", check=True)
    pid = int(pidfile.read_text())
    st = ocirt.state("c1")
    assert st["status"] == "created" and st["pid"] == pid
    assert st["bundle"] == b and st["id"] == "c1"
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    ocirt("start", "c1", check=True)
    assert ocirt.state("c1")["status"] == "running"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    r = ocirt("delete", "c1")
    assert r.rc == 1 and "cannot delete container c1 that is not stopped: running" in r.err
    ocirt("kill", "c1", "KILL", check=True)
    assert ocirt.wait_status("c1", "stopped")
    ocirt("delete", "c1", check=True)
    assert ocirt("state", "c1").rc == 1


def test_start_without_a_process_fails_and_stops(ocirt, bundle):
    """runtime-spec: process is OPTIONAL for create but REQUIRED when start is called."""
    b = bundle(edit=lambda c: c.pop("process"))
    ocirt("create", "--bundle", b, "c1", check=True)
    assert ocirt.state("c1")["status"] == "created"
    r = ocirt("start", "c1")
    assert r.rc == 1 and "no process" in r.err
    assert ocirt.wait_status("c1", "stopped")
    ocirt("delete", "c1", check=True)


def test_a_container_without_a_process_waits_in_the_trampoline(ocirt, bundle):
    """config.json without `process`: create succeeds (the init is the sealed
    trampoline, not Python), start refuses with one line, delete cleans up."""
    b = bundle(["true"], edit=lambda cfg: cfg.pop("process"))
    assert ocirt("create", "--bundle", b, "np").rc == 0
    pid = ocirt.state("np")["pid"]
    assert os.readlink(f"/proc/{pid}/exe").startswith("/memfd:ocirt-init")
    r = ocirt("start", "np")
    assert r.rc == 1 and "has no process to start" in r.err, r
    assert r.err.strip().count("\n") == 0
    assert ocirt("delete", "--force", "np").rc == 0
