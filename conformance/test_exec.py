"""exec: a second process in a running container (runc's command; engines use it for
`podman exec`, `kubectl exec` and health checks)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = [pytest.mark.root, needs("exec")]

NS_KINDS = ("pid", "net", "ipc", "uts", "mnt")


def _sleeper(h, edit=None):
    c = h.start(h.bundle(["sleep", "1000"], edit=edit))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    return c


def _detached_exec(h, c, *args):
    """exec --detach with a pid file; returns the exec'd process's host pid."""
    pidfile = h.path(f"{h.cid()}.pid")
    with open(h.path("exec.out"), "ab") as out:
        r = h.rt("exec", "--detach", "--pid-file", pidfile, *args, stdout=out, stderr=out)
    assert r.ok, r
    with open(pidfile) as f:
        pid = int(f.read())
    h.track(pid)
    assert wait_for(lambda: procfs.cmdline(pid) == ["sleep", "999"], 5), procfs.cmdline(pid)
    return pid


@case("EX-01", "runc: exec", "RUNC")
def test_exec_joins_namespaces(h):
    """the exec'd process is in every namespace of the container"""
    c = _sleeper(h)
    pid = _detached_exec(h, c, c.cid, "sleep", "999")
    for kind in NS_KINDS:
        assert procfs.ns(pid, kind) == procfs.ns(c.pid, kind), kind


@case("EX-02", "runc: exec", "RUNC")
def test_exec_exit_status(h):
    """exec exits with the process's status and passes its output"""
    c = _sleeper(h)
    r = h.rt("exec", c.cid, "sh", "-c", "echo from-exec; exit 5")
    assert r.rc == 5 and "from-exec" in r.out, r


@deviation("crun", "crun 1.8.1's exec --env replaces the environment instead of adding to "
           "it, so PATH is lost and sh is not found")
@case("EX-03", "runc: exec --env --cwd --user", "RUNC")
def test_exec_options(h):
    """--env, --cwd and --user shape the exec'd process"""
    c = _sleeper(h)
    r = h.rt("exec", "--env", "CONF_X=1", "--cwd", "/etc", "--user", "1000:1000", c.cid,
             "sh", "-c", "echo x=$CONF_X; pwd; id -u; id -g")
    assert r.rc == 0, r
    assert r.out.split() == ["x=1", "/etc", "1000", "1000"]


@case("EX-04", "runc: exec --process", "RUNC")
def test_exec_process_json(h):
    """exec -p reads the process (args, env, cwd, user) from a JSON file"""
    c = _sleeper(h)
    proc = {"terminal": False, "user": {"uid": 1000, "gid": 1000},
            "args": ["sh", "-c", "echo $CONF_Y; pwd; id -u"], "env": ["CONF_Y=json", "PATH=/bin"],
            "cwd": "/tmp"}
    path = h.path("process.json")
    with open(path, "w") as f:
        json.dump(proc, f)
    r = h.rt("exec", "--process", path, c.cid)
    assert r.rc == 0, r
    assert r.out.split() == ["json", "/tmp", "1000"]


@case("EX-05", "runc: exec", "RUNC")
def test_exec_stopped_fails(h):
    """exec into a stopped container fails"""
    c = h.start(h.bundle(["true"]))
    c.wait_stopped()
    assert h.rt("exec", c.cid, "true").rc != 0


@case("EX-06", "runc: exec", "RUNC")
def test_exec_missing_program_fails(h):
    """exec of a program that does not exist fails and the container keeps running"""
    c = _sleeper(h)
    assert h.rt("exec", c.cid, "/no/such/program").rc != 0
    assert c.status() == "running"


@case("EX-07", "runc: exec --tty", "RUNC")
def test_exec_tty(h):
    """exec --tty with a console socket gives the process a pty"""
    c = _sleeper(h)
    rx = h.console()
    r = h.rt("exec", "--tty", "--detach", "--console-socket", rx.path, c.cid,
             "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo exec-has-tty; sleep 1")
    assert r.ok, r
    rx.wait_output("exec-has-tty")


@case("EX-08", "runc: exec", "RUNC")
def test_exec_joins_cgroup(h):
    """the exec'd process is in the container's cgroups"""
    c = _sleeper(h)
    pid = _detached_exec(h, c, c.cid, "sleep", "999")
    for ctl in ("memory", "pids", "cpu", "freezer"):
        if cgroupfs.v1_hierarchy_for(ctl):
            assert cgroupfs.process_dir(pid, ctl) == cgroupfs.process_dir(c.pid, ctl), ctl


@deviation("crun", "crun 1.8.1's exec leaves no_new_privs clear although the container's "
           "process.noNewPrivileges is true")
@case("EX-09", "security.md CVE-2016-9962", "SEC")
def test_exec_keeps_restrictions(h):
    """the exec'd process gets the container's no_new_privs, seccomp and capabilities"""
    def edit(cfg):
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    c = _sleeper(h, edit)
    pid = _detached_exec(h, c, c.cid, "sleep", "999")
    st = procfs.status(pid)
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    assert procfs.caps(pid)["bounding"] == procfs.caps(c.pid)["bounding"]


@case("EX-10", "security.md CVE-2022-29162", "SEC")
def test_exec_cap_not_inheritable(h):
    """exec --cap adds the capability without putting it in the inheritable set"""
    c = _sleeper(h)
    r = h.rt("exec", "--cap", "CAP_NET_ADMIN", c.cid, "grep", "Cap", "/proc/self/status")
    assert r.rc == 0, r
    got = procfs.caps_from_status_text(r.out)
    assert "CAP_NET_ADMIN" in got["effective"] and got["inheritable"] == set(), got


@case("EX-11", "security.md CVE-2024-21626", "SEC")
def test_exec_no_fd_leak(h):
    """fds the runtime inherited never reach the exec'd process"""
    c = _sleeper(h)
    pidfile = h.path("leak.pid")
    argv = ["/bin/bash", "-c", 'exec 10</ 251</ && exec "$@"', "bash",
            *h.rt.cmd("exec", "--detach", "--pid-file", pidfile, c.cid, "sleep", "999")]
    with open(h.path("leak.out"), "wb") as out:
        r = subprocess.run(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0
    with open(pidfile) as f:
        pid = int(f.read())
    h.track(pid)
    assert wait_for(lambda: procfs.cmdline(pid) == ["sleep", "999"], 5)
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    assert fds == [0, 1, 2], {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}


@case("EX-12", "security.md CVE-2024-21626", "SEC")
def test_exec_hostile_cwd(h):
    """exec --cwd /proc/self/fd/N never runs the process outside the container"""
    c = _sleeper(h)
    escapes = []
    for n in range(3, 10):
        r = h.rt("exec", "--cwd", f"/proc/self/fd/{n}", c.cid, "sh", "-c", "pwd -P; ls -a")
        if r.rc == 0 and ("(unreachable)" in r.out or "config.json" in r.out.split()):
            escapes.append((n, r.out[:200]))
    assert not escapes, escapes
