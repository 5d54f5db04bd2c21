"""Seccomp profiles on real busybox containers: what the process inside meets, what the
host sees of it, and that a refused profile leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from ocirt.seccomp import libseccomp
from tests.leaks import assert_nothing_left
from tests.seccomp.agent import Agent

pytestmark = pytest.mark.root

DENY_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW",
              "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
SIGSYS_EXIT = 128 + 31


def with_seccomp(seccomp: dict, nnp: bool = True):
    def edit(config: dict) -> None:
        config["linux"]["seccomp"] = seccomp
        config["process"]["noNewPrivileges"] = nnp
    return edit


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def wait_for_file(path: str, text: str, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            with open(path) as f:
                content = f.read()
            if text in content:
                return content
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never showed up in {path}")


@pytest.mark.parametrize("nnp", [True, False], ids=["no-new-privs", "caps-raised-to-load"])
def test_filter_is_loaded_before_start_and_denies_mkdir(ocirt, bundle, tmp_path, nnp):
    script = ("mkdir /tmp/d 2>/result; echo rc=$? >>/result; touch /tmp/f && "
              "echo touch-ok >>/result; exec sleep 60")
    b = bundle(["sh", "-c", script], edit=with_seccomp(DENY_MKDIR, nnp))
    pidfile = str(tmp_path / "pid")
    ocirt("create", "--bundle", b, "--pid-file", pidfile, "c1", check=True)
    pid = int(Path(pidfile).read_text())
    # Loaded before the init waits for `start` (as runc does it), by the last code that
    # runs before the sealed trampoline: the created init is already filtered.
    assert status_field(pid, "Seccomp") == "2"
    ocirt("start", "c1", check=True)
    result = wait_for_file(os.path.join(b, "rootfs", "result"), "touch-ok")
    assert "mkdir: can't create directory '/tmp/d': Operation not permitted" in result
    assert "rc=1" in result
    assert not os.path.exists(os.path.join(b, "rootfs", "tmp", "d"))
    assert status_field(pid, "Seccomp") == "2" and status_field(pid, "Seccomp_filters") == "1"
    assert status_field(pid, "NoNewPrivs") == ("1" if nnp else "0")
    assert status_field(pid, "CapEff") == status_field(pid, "CapPrm")  # caps dropped again
    ocirt("kill", "c1", "KILL", check=True)
    assert ocirt.wait_status("c1", "stopped")
    ocirt("delete", "c1", check=True)


@pytest.mark.parametrize("errno_ret, text", [(errno.EIO, "Input/output error"),
                                             (errno.EXDEV, "Invalid cross-device link")])
def test_errno_ret_reaches_the_process(ocirt, bundle, errno_ret, text):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret}]}
    b = bundle(["mkdir", "/tmp/d"], edit=with_seccomp(seccomp))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1 and f"can't create directory '/tmp/d': {text}" in r.err, r


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"])
def test_killing_actions_end_the_process_with_sigsys(ocirt, bundle, action):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]}
    b = bundle(["mkdir", "/tmp/d"], edit=with_seccomp(seccomp))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == SIGSYS_EXIT, r
    assert not os.path.exists(os.path.join(b, "rootfs", "tmp", "d"))


def test_podman_default_profile_runs_a_normal_shell(ocirt, bundle, podman_seccomp):
    """podman's profile (without noNewPrivileges, as podman sends it): an ordinary shell
    works; sethostname, allowed to CAP_SYS_ADMIN in a UTS namespace, is refused by it."""
    script = ("grep ^Seccomp: /proc/self/status; echo a b | (read x y; echo $y) && "
              "ls /bin/sh >/dev/null && linux32 true && echo shell-ok; hostname other; "
              "echo hostname=$(hostname)")

    def edit(config: dict) -> None:
        with_seccomp(podman_seccomp, nnp=False)(config)
        for kind in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")

    r = ocirt("run", "--bundle", bundle(["sh", "-c", script], edit=edit), "c1")
    assert r.rc == 0, r
    assert "Seccomp:\t2" in r.out and "b\nshell-ok" in r.out
    assert "hostname: sethostname: Operation not permitted" in r.err
    assert "hostname=conformance" in r.out


@pytest.mark.skipif(libseccomp.native_arch() != libseccomp.arch_token("x86_64"),
                    reason="syscall numbers are x86_64's")
def test_syscalls_newer_than_the_profile_get_enosys(ocirt, bundle):
    """Deny-by-default profile naming every syscall up to newfstatat (262) but mkdir:
    mkdir gets EPERM, unshare (272, newer than anything named) ENOSYS, so that libc can
    fall back (runc's behaviour)."""
    x86_64 = libseccomp.arch_token("x86_64")
    names = [name for nr in range(263) if nr not in (83, 258)
             if (name := libseccomp.syscall_name(nr, x86_64))]
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO",
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
    script = "mkdir /tmp/d; unshare -U true; echo done"
    r = ocirt("run", "--bundle", bundle(["sh", "-c", script], edit=with_seccomp(seccomp)), "c1")
    assert r.rc == 0 and "done" in r.out, r
    assert "can't create directory '/tmp/d': Operation not permitted" in r.err
    assert "unshare(0x10000000): Function not implemented" in r.err


def test_notify_agent_answers_for_the_container(ocirt, bundle, tmp_path):
    sock = str(tmp_path / "agent.sock")
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock,
               "listenerMetadata": "agent-metadata",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}

    def edit(config: dict) -> None:
        with_seccomp(seccomp)(config)
        config["annotations"] = {"org.example.test": "notify"}

    b = bundle(["sh", "-c", "mkdir /tmp/d; echo rc=$?; mkdir /tmp/e && echo made-e"], edit=edit)
    pidfile = str(tmp_path / "pid")
    answers = iter([(-errno.EHOSTDOWN, 0)])
    with Agent(sock, lambda nr, args: next(answers, "continue")) as agent:
        r = ocirt("run", "--bundle", b, "--pid-file", pidfile, "c1")
    assert agent.error is None
    assert r.rc == 0, r
    assert "can't create directory '/tmp/d': Host is down" in r.err and "rc=1" in r.out
    assert "made-e" in r.out and os.path.isdir(os.path.join(b, "rootfs", "tmp", "e"))
    assert len(agent.seen) == 2 and {nr for _, nr, _ in agent.seen} <= {83, 258}
    pid = int(Path(pidfile).read_text())
    state = agent.state
    assert agent.fds_received == 1 and state["fds"] == ["seccompFd"]
    assert state["pid"] == pid and state["metadata"] == "agent-metadata"
    assert state["state"] == {"ociVersion": "1.0.2", "id": "c1", "status": "creating",
                              "pid": pid, "bundle": b,
                              "annotations": {"org.example.test": "notify"}}


@pytest.mark.parametrize("seccomp, message", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["rmdir"], "action": "SCMP_ACT_KILL_EVERYTHING"}]},
     'linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_KILL_EVERYTHING"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "failed to connect with seccomp agent specified in the seccomp profile: dial unix "
     "/nonexistent/agent.sock: no such file or directory"),
])
def test_refused_profile_fails_create_and_leaves_nothing(ocirt, bundle, state_root, seccomp,
                                                         message):
    b = bundle(["true"], edit=with_seccomp(seccomp))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1 and message.replace('"', '\\"') in r.err, r  # quoted in the log line
    assert "Traceback" not in r.err
    assert_nothing_left(state_root, "c1", b)


def test_features_report_seccomp(ocirt):
    features = json.loads(ocirt("features", check=True).out)["linux"]["seccomp"]
    assert features["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in features["actions"] and "SCMP_CMP_MASKED_EQ" in features[
        "operators"]
    assert "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in features["supportedFlags"]
