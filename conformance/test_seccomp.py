"""seccomp: the filter is installed and each action behaves as configured.

Probes use busybox applets whose syscalls are known on x86_64: mkdir -> mkdir(2),
chmod -> chmod(2), sync -> sync(2); the shell itself never makes those calls.
"""

from __future__ import annotations

import platform

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = [pytest.mark.root, needs("seccomp")]

ARCHES = {"x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
          "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}


def _profile(*rules, default="SCMP_ACT_ALLOW"):
    return {"defaultAction": default,
            "architectures": ARCHES.get(platform.machine(), []),
            "syscalls": list(rules)}


def _seccomp(profile, **process):
    def edit(cfg):
        cfg["linux"]["seccomp"] = profile
        cfg["process"].update(process)
    return edit


def _rule(names, action, **more):
    return {"names": list(names), "action": action, **more}


MKDIR = ["mkdir", "mkdirat"]
PROBE = ("mkdir /tmp/d 2>/tmp/err && echo mkdir-ok || echo mkdir-failed:$(cat /tmp/err); "
         "touch /tmp/f && echo touch-ok")


@case("SC-01", "config-linux.md#seccomp", "MUST")
def test_errno_action(h):
    """SCMP_ACT_ERRNO fails the listed syscall with EPERM and leaves the others alone"""
    b = h.bundle(["sh", "-c", PROBE], edit=_seccomp(_profile(_rule(MKDIR, "SCMP_ACT_ERRNO"))))
    out = h.output(b)
    assert "mkdir-failed" in out and "Operation not permitted" in out, out
    assert "touch-ok" in out


@case("SC-02", "config-linux.md#seccomp errnoRet", "MUST")
def test_errno_ret(h):
    """errnoRet chooses the errno the syscall fails with"""
    rule = _rule(MKDIR, "SCMP_ACT_ERRNO", errnoRet=13)
    out = h.output(h.bundle(["sh", "-c", PROBE], edit=_seccomp(_profile(rule))))
    assert "Permission denied" in out, out


@case("SC-03", "config-linux.md#seccomp", "MUST")
def test_kill_action(h):
    """SCMP_ACT_KILL kills the thread making the syscall (SIGSYS)"""
    b = h.bundle(["sh", "-c", "sync; echo rc=$?"],
                 edit=_seccomp(_profile(_rule(["sync"], "SCMP_ACT_KILL"))))
    assert "rc=159" in h.output(b)


@case("SC-04", "config-linux.md#seccomp args", "MUST")
def test_argument_condition(h):
    """a rule with an argument condition only matches calls with that argument"""
    rule = _rule(["chmod"], "SCMP_ACT_ERRNO",
                 args=[{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}])
    script = ("touch /tmp/f; chmod 755 /tmp/f && echo chmod755-ok; "
              "chmod 777 /tmp/f 2>/dev/null || echo chmod777-denied")
    out = h.output(h.bundle(["sh", "-c", script], edit=_seccomp(_profile(rule))))
    assert "chmod755-ok" in out and "chmod777-denied" in out, out


@case("SC-05", "config-linux.md#seccomp", "MUST")
def test_filter_mode_host_view(h):
    """from the host the process is in seccomp filter mode"""
    edit = _seccomp(_profile(_rule(MKDIR, "SCMP_ACT_ERRNO")))
    c = h.start(h.bundle(["sleep", "1000"], edit=edit))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    st = procfs.status(c.pid)
    assert st["Seccomp"] == "2"
    assert int(st.get("Seccomp_filters", "1")) >= 1


@case("SC-06", "config-linux.md#seccomp", "MUST")
def test_non_root_without_nnp(h):
    """the filter applies to a non-root user without noNewPrivileges too"""
    edit = _seccomp(_profile(_rule(MKDIR, "SCMP_ACT_ERRNO")), noNewPrivileges=False,
                    user={"uid": 1000, "gid": 1000})
    out = h.output(h.bundle(["sh", "-c", PROBE], edit=edit))
    assert "mkdir-failed" in out and "touch-ok" in out, out


@case("SC-07", "config-linux.md#seccomp", "MUST")
def test_no_seccomp_no_filter(h):
    """without linux.seccomp the process is not filtered"""
    c = h.start(h.bundle(["sleep", "1000"]))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    assert procfs.status(c.pid)["Seccomp"] == "0"


@case("SC-08", "config-linux.md#seccomp", "MUST")
def test_invalid_action_fails(h):
    """an unknown action is an error"""
    b = h.bundle(["true"], edit=_seccomp(_profile(_rule(MKDIR, "SCMP_ACT_CONFORMANCE"))))
    assert h.run(b).rc != 0
    assert h.rt.ids() == []


@deviation("runc", "runc 1.1.5 accepts errnoRet on SCMP_ACT_KILL and ignores it")
@case("SC-09", "config-linux.md#seccomp errnoRet", "MUST")
def test_errno_ret_without_errno_action_fails(h):
    """errnoRet on an action that returns no errno (SCMP_ACT_KILL) is an error"""
    rule = _rule(["sync"], "SCMP_ACT_KILL", errnoRet=13)
    assert h.run(h.bundle(["true"], edit=_seccomp(_profile(rule)))).rc != 0
    assert h.rt.ids() == []
