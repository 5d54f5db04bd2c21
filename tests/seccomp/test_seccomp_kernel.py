"""Compiled filters loaded into forked children: what the kernel makes of them.

No root needed: each child sets no_new_privs, installs the filter exactly as the
container init does (Filter.install), makes raw syscalls and reports their errnos.
getpriority() with an invalid `which` fails with EINVAL whatever its other arguments, so
any of its six argument registers can carry a value for a condition to look at.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

import pytest

from ocirt.seccomp import compile_filter, libseccomp
from tests.seccomp.agent import CONTINUE, Agent

PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

pytestmark = pytest.mark.skipif(
    libseccomp.native_arch() != libseccomp.arch_token("x86_64"),
    reason="syscall numbers are x86_64's")

NR = {"getpriority": 140, "getppid": 110, "memfd_create": 319, "kill": 62}
MATCHED = 42  # ENOMSG: the errnoRet our rules return
INVALID = errno.EINVAL  # getpriority itself, when the filter lets it through


def run_under(seccomp: dict, calls: list[tuple[int, ...]], state: dict | None = None
              ) -> tuple[list[int], int]:
    """errno (0 = success) of each raw syscall made under the filter, and the child's
    wait status."""
    filt = compile_filter(seccomp)
    count = len(calls)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            results = (ctypes.c_int * count)()
            argv = [[ctypes.c_long(a) for a in call] for call in calls]
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            filt.install(state or {}, os.getpid())
            for i in range(count):  # nothing in here may need a syscall but the probes
                ret = _libc.syscall(*argv[i])
                results[i] = ctypes.get_errno() if ret < 0 else 0
            os.write(w, bytes(results))
        finally:
            os._exit(0)
    os.close(w)
    if filt is not None:
        filt.close()
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    got = list(struct.unpack(f"{len(data) // 4}i", data))
    return got, status


def getpriority(*args: int) -> tuple[int, ...]:
    """getpriority with `which` invalid (EINVAL) and the remaining registers set."""
    return (NR["getpriority"], 999, *args)


def rule(op: str, index: int, value: int, value_two: int = 0) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MATCHED,
         "args": [{"index": index, "value": value, "valueTwo": value_two, "op": op}]}]}


@pytest.mark.parametrize("op, value, value_two, matches, misses", [
    ("SCMP_CMP_EQ", 7, 0, [7], [6, 8, 7 | 1 << 32]),
    ("SCMP_CMP_NE", 7, 0, [6, 8, 1 << 40], [7]),
    ("SCMP_CMP_LT", 7, 0, [0, 6], [7, 8, 1 << 33]),
    ("SCMP_CMP_LE", 7, 0, [0, 7], [8, 1 << 33]),
    ("SCMP_CMP_GT", 7, 0, [8, 1 << 33], [0, 7]),
    ("SCMP_CMP_GE", 7, 0, [7, 1 << 33], [0, 6]),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x30, [0x30, 0x35, 0x3F, 1 << 32 | 0x30], [0x40, 0x20, 0x75]),
    ("SCMP_CMP_EQ", 1 << 40, 0, [1 << 40], [0, 1 << 41]),  # all 64 bits compared
])
def test_operators(op, value, value_two, matches, misses):
    values = matches + misses
    got, status = run_under(rule(op, 2, value, value_two),
                            [getpriority(0, v) for v in values])
    assert status == 0
    assert got == [MATCHED] * len(matches) + [INVALID] * len(misses)


def test_conditions_on_distinct_arguments_must_all_match():
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MATCHED,
         "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"},
                  {"index": 5, "value": 9, "op": "SCMP_CMP_EQ"}]}]}
    got, _ = run_under(seccomp, [getpriority(5, 0, 0, 0, 9), getpriority(5, 0, 0, 0, 8),
                                 getpriority(4, 0, 0, 0, 9)])
    assert got == [MATCHED, INVALID, INVALID]


def test_conditions_on_one_argument_each_match_alone_like_runc():
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MATCHED,
         "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 6, "op": "SCMP_CMP_EQ"}]}]}
    got, _ = run_under(seccomp, [getpriority(5), getpriority(6), getpriority(7)])
    assert got == [MATCHED, MATCHED, INVALID]


@pytest.mark.parametrize("action, extra, want", [
    ("SCMP_ACT_ERRNO", {}, errno.EPERM),  # runc's default errno
    ("SCMP_ACT_ERRNO", {"errnoRet": 0}, 0),  # "succeeds" without running
    ("SCMP_ACT_ERRNO", {"errnoRet": errno.EXDEV}, errno.EXDEV),
    ("SCMP_ACT_TRACE", {}, errno.ENOSYS),  # no tracer attached: the kernel says ENOSYS
    ("SCMP_ACT_LOG", {}, INVALID),
    ("SCMP_ACT_ALLOW", {}, INVALID),
])
def test_returning_actions(action, extra, want):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [], "syscalls": [
        {"names": ["getpriority"], "action": action, **extra}]}
    if action == "SCMP_ACT_ALLOW":
        seccomp["defaultAction"] = "SCMP_ACT_ERRNO"
        seccomp["syscalls"].append({"names": ["write", "exit_group", "exit", "brk", "mmap",
                                              "munmap"], "action": "SCMP_ACT_ALLOW"})
    got, status = run_under(seccomp, [getpriority()])
    assert (got, status) == ([want], 0)


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"])
def test_killing_actions(action):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getppid"], "action": action}]}
    got, status = run_under(seccomp, [(NR["getppid"],)])
    assert got == [] and os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS


def test_default_errno_ret_and_enosys_for_syscalls_newer_than_the_profile():
    """Default ERRNO(EPERM): a syscall the profile does not name gets EPERM, unless its
    number is above every syscall the profile names: then ENOSYS (runc's patchbpf)."""
    allowed = ["write", "exit_group", "exit", "brk", "mmap", "munmap", "getpriority"]
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO",
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    calls = [getpriority(), (NR["getppid"],), (NR["memfd_create"], 0, 0), (1000,)]
    got, _ = run_under(seccomp, calls)
    assert got == [INVALID, errno.EPERM, errno.ENOSYS, errno.ENOSYS]
    seccomp["defaultErrnoRet"] = errno.EACCES
    got, _ = run_under(seccomp, calls)
    assert got == [INVALID, errno.EACCES, errno.ENOSYS, errno.ENOSYS]
    del seccomp["architectures"]  # the native one is implied (runc 1.1.15, 1.2; not 1.1.5)
    got, _ = run_under(seccomp, calls)
    assert got == [INVALID, errno.EACCES, errno.ENOSYS, errno.ENOSYS]


def test_permissive_default_gets_no_enosys_stub():
    seccomp = {"defaultAction": "SCMP_ACT_LOG",
               "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]}
    got, _ = run_under(seccomp, [(NR["getppid"],), (1000,)])
    assert got == [errno.EPERM, errno.ENOSYS]  # 1000: the kernel's own ENOSYS


@pytest.mark.parametrize("flags", [["SECCOMP_FILTER_FLAG_TSYNC"], ["SECCOMP_FILTER_FLAG_LOG"],
                                   ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"], None, []])
def test_flags_load(flags):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getpriority"], "action": "SCMP_ACT_ERRNO"}]}
    if flags is not None:
        seccomp["flags"] = flags
    got, status = run_under(seccomp, [getpriority()])
    assert (got, status) == ([errno.EPERM], 0)


def test_notify_hands_the_listener_to_the_agent(tmp_path):
    path = str(tmp_path / "agent.sock")

    def answer(nr, args):
        if args[1] == 1:
            return -errno.EHOSTDOWN, 0
        if args[1] == 2:
            return 0, 1234
        return CONTINUE

    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
               "listenerMetadata": "meta=1",
               "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
               "syscalls": [{"names": ["getpriority"], "action": "SCMP_ACT_NOTIFY"}]}
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242,
             "bundle": "/b", "annotations": {"a": "b"}}
    with Agent(path, answer) as agent:
        got, status = run_under(seccomp, [getpriority(1), getpriority(2), getpriority(3)],
                                state)
    assert agent.error is None
    assert (got, status) == ([errno.EHOSTDOWN, 0, INVALID], 0)
    assert agent.fds_received == 1
    assert [(nr, args[1]) for _, nr, args in agent.seen] == [(NR["getpriority"], n)
                                                             for n in (1, 2, 3)]
    assert list(agent.state) == ["ociVersion", "fds", "pid", "metadata", "state"]
    assert agent.state["fds"] == ["seccompFd"] and agent.state["metadata"] == "meta=1"
    assert agent.state["pid"] == agent.seen[0][0]  # the child's PID, which install got
    assert agent.state["state"] == state


def test_notify_agent_not_listening_fails_at_compile_time(tmp_path):
    from ocirt.errors import OcirtError

    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "none"),
               "syscalls": [{"names": ["getpriority"], "action": "SCMP_ACT_NOTIFY"}]}
    with pytest.raises(OcirtError, match="failed to connect with seccomp agent"):
        compile_filter(seccomp)

