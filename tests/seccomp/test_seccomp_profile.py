"""linux.seccomp -> profile -> BPF, without root and without loading anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ocirt.errors import OcirtError
from ocirt.seccomp import bpf, compile_filter, libseccomp
from ocirt.seccomp import compile as cp
from ocirt.seccomp import profile as prof

ALLOW = {"defaultAction": "SCMP_ACT_ALLOW"}


def parsed(**fields):
    return prof.parse({**ALLOW, **fields})


@pytest.mark.parametrize("seccomp, message", [
    ([], "linux.seccomp: must be an object"),
    ({"defaultAction": "SCMP_ACT_FOO"}, 'linux.seccomp.defaultAction: unknown action '
                                        '"SCMP_ACT_FOO"'),
    ({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.defaultAction: missing action"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action"),
    ({**ALLOW, "defaultErrnoRet": -1}, "linux.seccomp.defaultErrnoRet: must be an errno"),
    ({**ALLOW, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]},
     'linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_VAX"'),
    ({**ALLOW, "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_NOPE"]},
     'linux.seccomp.flags[1]: unknown flag "SECCOMP_FILTER_FLAG_NOPE"'),
    ({**ALLOW, "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
                            {"names": ["getpid"], "action": "SCMP_ACT_FOO"}]},
     'linux.seccomp.syscalls[1].action: unknown action "SCMP_ACT_FOO"'),
    ({**ALLOW, "syscalls": [{"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[1]: must be a non-empty syscall name"),
    ({**ALLOW, "syscalls": [{"names": "mkdir", "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names: must be a list"),
    ({**ALLOW, "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": 70000}]},
     "linux.seccomp.syscalls[0].errnoRet: must be an errno number from 0 to 65535"),
    ({**ALLOW, "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                             "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: must be 0 to 5"),
    ({**ALLOW, "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]},
     'linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_XX"'),
    ({**ALLOW, "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                             "args": [{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value: must be an unsigned 64-bit integer"),
    ({**ALLOW, "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath: must be set when a syscall uses SCMP_ACT_NOTIFY"),
    ({**ALLOW, "listenerPath": "/x",
      "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0]: SCMP_ACT_NOTIFY cannot be used for the write syscall"),
])
def test_bad_profiles_name_the_field(seccomp, message):
    with pytest.raises(OcirtError) as info:
        compile_filter(seccomp)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_architecture_libseccomp_does_not_know():
    if libseccomp.arch_token("loongarch64"):
        pytest.skip("this libseccomp knows loongarch64")
    with pytest.raises(OcirtError, match=r"linux.seccomp.architectures\[1\]: "
                                         r"SCMP_ARCH_LOONGARCH64 is not supported by libseccomp"):
        compile_filter({**ALLOW, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_LOONGARCH64"]})


@pytest.mark.parametrize("seccomp", [{}, {"defaultAction": ""}, {"syscalls": []}])
def test_empty_profile_means_no_filter(seccomp):
    assert compile_filter(seccomp) is None


def test_actions_and_errno_defaults_follow_runc():
    p = parsed(defaultAction="SCMP_ACT_ERRNO", syscalls=[
        {"names": ["a1"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["a2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["a3"], "action": "SCMP_ACT_TRACE"},
        {"names": ["a4"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
        {"names": ["a5"], "action": "SCMP_ACT_KILL"},
        {"names": ["a6"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["a7"], "action": "SCMP_ACT_KILL_THREAD"},
        {"names": ["a8"], "action": "SCMP_ACT_TRAP"},
        {"names": ["a9"], "action": "SCMP_ACT_LOG"},
        {"names": ["a10"], "action": "SCMP_ACT_ALLOW"},
    ])
    assert p.default_action == 0x00050001 and p.default_errno == 1
    assert [r.action for r in p.rules] == [
        0x00050001, 0x00050026, 0x7FF00001, 0x7FF00007, 0, 0x80000000, 0, 0x00030000,
        0x7FFC0000, 0x7FFF0000]
    p = parsed(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=38)
    assert p.default_action == 0x00050026 and p.default_errno == 38


@pytest.mark.parametrize("action", ["SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_LOG"])
def test_errno_ret_needs_an_errno_action(action):
    """config-linux.md: errnoRet only with SCMP_ACT_ERRNO/TRACE (runc ignores it)."""
    with pytest.raises(OcirtError, match=r"syscalls\[0\].action: errnoRet is only valid"):
        parsed(defaultAction="SCMP_ACT_ERRNO",
               syscalls=[{"names": ["a"], "action": action, "errnoRet": 5}])


def test_names_flatten_into_rules_with_shared_conditions():
    args = [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 0xF0, "valueTwo": 0x30, "op": "SCMP_CMP_MASKED_EQ"}]
    p = parsed(syscalls=[{"names": ["kill", "tkill"], "action": "SCMP_ACT_ERRNO",
                          "args": args}])
    assert [r.name for r in p.rules] == ["kill", "tkill"]
    assert p.rules[0].conditions == [(1, 4, 5, 0), (0, 7, 0xF0, 0x30)]
    assert p.rules[1].where == "linux.seccomp.syscalls[0]"


def test_flags_absent_means_spec_allow_like_runc():
    assert cp.load_flags(parsed()) & prof.FLAG_SPEC_ALLOW
    assert cp.load_flags(parsed(flags=[])) == 0
    assert cp.load_flags(parsed(flags=["SECCOMP_FILTER_FLAG_LOG",
                                       "SECCOMP_FILTER_FLAG_TSYNC"])) == 3
    # WAIT_KILLABLE_RECV means nothing without a listener (the kernel would refuse it)
    assert cp.load_flags(parsed(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])) == 0


def test_unknown_syscall_names_are_ignored_like_runc():
    filt = compile_filter({**ALLOW, "syscalls": [
        {"names": ["no_such_syscall_xyz", "mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    with_mkdir_only = compile_filter({**ALLOW, "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    assert filt.program == with_mkdir_only.program


def test_rule_with_the_default_action_is_skipped():
    a = compile_filter({**ALLOW, "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]})
    b = compile_filter(ALLOW)
    assert a.program == b.program


@pytest.fixture(scope="module")
def x86_64_only():
    if libseccomp.native_arch() != libseccomp.arch_token("x86_64"):
        pytest.skip("x86_64 syscall numbers")


def test_enosys_limits_per_architecture(x86_64_only):
    p = prof.parse({"defaultAction": "SCMP_ACT_ERRNO",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [{"names": ["read", "openat", "socketcall"],
                                  "action": "SCMP_ACT_ALLOW"}]})
    limits = cp.enosys_limits(p, [t for t, _ in cp.arch_tokens(p)])
    x86_64 = libseccomp.arch_token("x86_64")
    assert set(limits) == {
        bpf.Limit(x86_64, bpf.X86_64, 257),  # openat
        bpf.Limit(x86_64, bpf.X32, 257 | bpf.X32_SYSCALL_BIT),
        bpf.Limit(libseccomp.arch_token("x86"), bpf.PLAIN, 295),  # openat on i386
    }
    # permissive defaults, or a default that already says ENOSYS, need no stub
    for default in ({"defaultAction": "SCMP_ACT_ALLOW"}, {"defaultAction": "SCMP_ACT_LOG"},
                    {"defaultAction": "SCMP_ACT_TRACE"},
                    {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}):
        p = prof.parse({**default, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL"}]})
        assert cp.enosys_limits(p, [x86_64]) == []


def run_bpf(program: list[bpf.Insn], arch: int, nr: int) -> int | str:
    """A classic BPF interpreter for the stub: its return value, or "filter" when it
    falls through to the filter that would follow it."""
    acc, pc = 0, 0
    data = {bpf.OFF_NR: nr, bpf.OFF_ARCH: arch}
    while pc < len(program):
        code, jt, jf, k = program[pc]
        pc += 1
        if code == bpf.LD_W_ABS:
            acc = data[k]
        elif code == bpf.RET_K:
            return k
        elif code == bpf.JA:
            pc += k
        else:
            taken = {bpf.JEQ_K: acc == k, bpf.JGT_K: acc > k, bpf.JSET_K: bool(acc & k)}[code]
            pc += jt if taken else jf
    assert pc == len(program), "jumped past the end of the stub"
    return "filter"


def test_enosys_stub_decisions():
    amd64, i386, s390x = 0xC000003E, 0x40000003, 0x80000016
    x32 = bpf.X32_SYSCALL_BIT
    stub = bpf.enosys_stub([bpf.Limit(amd64, bpf.X86_64, 300), bpf.Limit(amd64, bpf.X32, x32 | 200),
                            bpf.Limit(i386, bpf.PLAIN, 400), bpf.Limit(s390x, bpf.S390, 250)])
    enosys = bpf.RET_ENOSYS
    cases = [
        (amd64, 0, "filter"), (amd64, 300, "filter"), (amd64, 301, enosys),
        (amd64, 0xFFFFFFFF, enosys),
        (amd64, x32 | 200, "filter"), (amd64, x32 | 201, enosys),
        (i386, 400, "filter"), (i386, 401, enosys),
        (s390x, 0, enosys), (s390x, 250, "filter"), (s390x, 251, enosys),
        (0xC00000B7, 999, "filter"),  # an architecture the profile does not have
    ]
    for arch, nr, want in cases:
        assert run_bpf(stub, arch, nr) == want, (hex(arch), hex(nr))
    only64 = bpf.enosys_stub([bpf.Limit(amd64, bpf.X86_64, 300)])
    assert run_bpf(only64, amd64, x32 | 999) == "filter"
    assert run_bpf(only64, amd64, 999) == enosys
    only32 = bpf.enosys_stub([bpf.Limit(amd64, bpf.X32, x32 | 200)])
    assert run_bpf(only32, amd64, 999) == "filter"
    assert run_bpf(only32, amd64, x32 | 999) == enosys
    assert bpf.enosys_stub([]) == []


def test_compiled_program_starts_with_the_stub(x86_64_only):
    filt = compile_filter({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]})
    program = bpf.decode(filt.program)
    assert program[0] == (bpf.LD_W_ABS, 0, 0, bpf.OFF_ARCH)
    assert (bpf.JGT_K, 0, 1, 1) in program  # write (1) is the largest syscall named
    assert len(filt) == len(program)


def test_podman_default_profile_compiles(podman_seccomp):
    filt = compile_filter(podman_seccomp)
    assert 100 < len(filt) <= bpf.MAX_INSNS
    assert filt.flags == prof.FLAG_SPEC_ALLOW
    assert filt.fds() == []


def test_features_are_probed_and_truthful():
    from ocirt.seccomp import FEATURES

    features = dict(FEATURES)
    assert features["enabled"] is True
    assert set(features["actions"]) == set(prof.ACTIONS)
    assert set(features["operators"]) == set(prof.OPERATORS)
    assert "SCMP_ARCH_X86_64" in features["archs"] and "SCMP_ARCH_X32" in features["archs"]
    assert "SCMP_ARCH_LOONGARCH64" not in features["archs"]  # libseccomp 2.5.4 lacks it
    assert features["knownFlags"] == list(prof.FLAGS)
    assert set(features["supportedFlags"]) <= set(features["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in features["supportedFlags"]


def test_importing_the_package_loads_nothing():
    code = ("import sys, ocirt.seccomp as s; "
            "print(sorted(m for m in sys.modules if m.startswith(('ocirt.seccomp.', 'ctypes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
