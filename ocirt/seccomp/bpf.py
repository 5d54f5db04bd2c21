"""Classic BPF for seccomp: instruction encoding, and runc's -ENOSYS stub.

A profile lists the syscalls its author knew. A filter whose default action is "deny"
then also denies syscalls invented after the profile was written, with EPERM: glibc and
friends treat EPERM as a real refusal, whereas ENOSYS makes them fall back to the older
syscall (clone3 -> clone, faccessat2 -> faccessat, ...). runc (libcontainer/seccomp/
patchbpf) therefore prepends a stub to the libseccomp program: per architecture, any
syscall number above the largest one the profile names returns -ENOSYS; everything else
goes on to the real filter. We generate the same decisions with our own small program.

On x86_64 the x32 ABI shares the audit architecture and marks its syscalls with bit 30,
so that architecture gets one limit per mode; on s390(x) syscall 0 is the multiplexer
unknown syscalls end up in, which gets -ENOSYS as well.
"""

from __future__ import annotations

import struct

INSN = struct.Struct("=HBBI")  # struct sock_filter, host byte order
MAX_INSNS = 4096  # BPF_MAXINSNS

LD_W_ABS = 0x20
JA = 0x05
JEQ_K = 0x15
JGT_K = 0x25
JSET_K = 0x45
RET_K = 0x06

OFF_NR = 0  # struct seccomp_data
OFF_ARCH = 4
X32_SYSCALL_BIT = 0x40000000
RET_ERRNO = 0x00050000
ENOSYS = 38
RET_ENOSYS = RET_ERRNO | ENOSYS

Insn = tuple[int, int, int, int]  # code, jt, jf, k

# The modes an audit architecture's limits can come in.
PLAIN, X86_64, X32, S390 = "plain", "x86_64", "x32", "s390"


class Limit:
    """The largest syscall number a profile names for one architecture (one mode)."""

    __slots__ = ("audit_arch", "mode", "largest")

    def __init__(self, audit_arch: int, mode: str, largest: int) -> None:
        self.audit_arch = audit_arch
        self.mode = mode
        self.largest = largest

    def _key(self) -> tuple[int, str, int]:
        return self.audit_arch, self.mode, self.largest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limit) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Limit({self.audit_arch:#x}, {self.mode!r}, {self.largest:#x})"


def encode(program: list[Insn]) -> bytes:
    return b"".join(INSN.pack(*insn) for insn in program)


def decode(data: bytes) -> list[Insn]:
    return [INSN.unpack_from(data, off) for off in range(0, len(data), INSN.size)]


def enosys_stub(limits: list[Limit]) -> list[Insn]:
    """The stub to put in front of the filter; it falls through to the filter (which must
    follow it directly) for everything it does not answer with -ENOSYS."""
    groups: dict[int, dict[str, int]] = {}
    for limit in limits:
        groups.setdefault(limit.audit_arch, {})[limit.mode] = limit.largest
    if not groups:
        return []
    program: list[Insn | tuple[str, str]] = [(LD_W_ABS, 0, 0, OFF_ARCH)]
    for i, audit in enumerate(groups):
        program += [(JEQ_K, 0, 1, audit), ("ja", f"arch{i}")]
    program.append(("ja", "filter"))
    labels = {}
    for i, modes in enumerate(groups.values()):
        labels[f"arch{i}"] = len(program)
        program += _section(modes)
    labels["filter"] = len(program)
    return [_resolve(insn, pc, labels) for pc, insn in enumerate(program)]


def _section(modes: dict[str, int]) -> list[Insn | tuple[str, str]]:
    """The checks for one audit architecture, entered with nothing loaded."""
    body: list[Insn | tuple[str, str]] = [(LD_W_ABS, 0, 0, OFF_NR)]
    if S390 in modes:
        body += [(JEQ_K, 0, 1, 0), (RET_K, 0, 0, RET_ENOSYS)]
        modes = {PLAIN: modes[S390]}
    if set(modes) == {X86_64, X32}:
        return body + [(JSET_K, 3, 0, X32_SYSCALL_BIT)] + _above(modes[X86_64]) \
            + _above(modes[X32])
    if set(modes) == {X86_64}:  # x32 syscalls are not this profile's business
        return body + [(JSET_K, 0, 1, X32_SYSCALL_BIT), ("ja", "filter")] + \
            _above(modes[X86_64])
    if set(modes) == {X32}:
        return body + [(JSET_K, 1, 0, X32_SYSCALL_BIT), ("ja", "filter")] + \
            _above(modes[X32])
    if set(modes) == {PLAIN}:
        return body + _above(modes[PLAIN])
    raise ValueError(f"seccomp: unexpected architecture modes {sorted(modes)}")


def _above(largest: int) -> list[Insn | tuple[str, str]]:
    """-ENOSYS above `largest`, else on to the filter."""
    return [(JGT_K, 0, 1, largest), (RET_K, 0, 0, RET_ENOSYS), ("ja", "filter")]


def _resolve(insn: Insn | tuple[str, str], pc: int, labels: dict[str, int]) -> Insn:
    if insn[0] == "ja":
        return (JA, 0, 0, labels[str(insn[1])] - pc - 1)
    return insn  # type: ignore[return-value]
