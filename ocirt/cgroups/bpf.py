"""The cgroup v2 device filter: a small eBPF assembler, the program that enforces a
`DeviceState`, and loading/attaching it through bpf(2).

Cgroup v2 has no devices.allow/deny; the kernel instead runs a BPF_PROG_TYPE_CGROUP_DEVICE
program on every device access (open, mknod) with a context of three u32s:
`access_type` (device type in the low 16 bits, access bits in the high 16), `major`,
`minor`. It returns 1 to allow, 0 to deny.

The program checks the exceptions in order and returns the exception's action on the
first match, else the default. An allow exception matches when it grants every
requested access bit; a deny exception (allow-all mode) matches when it shares any bit,
which is what v1 does (runc's filter lets `rw` through a `deny w` rule).

The tests interpret the same bytes the kernel gets (tests/cgroups/bpf_interp.py), so
the rule logic is checked without root; `attach` loads the program and attaches it to a
cgroup directory, replacing the programs attached there before.
"""

from __future__ import annotations

import os
import struct

from ocirt.cgroups.devices import DeviceState

# Instruction classes, operations and sources (include/uapi/linux/bpf.h).
LDX, ALU, JMP, JMP32, ALU64 = 0x01, 0x04, 0x05, 0x06, 0x07
MEM, W = 0x60, 0x00
K, X = 0x00, 0x08
ADD, SUB, OR, AND, LSH, RSH, MOV = 0x00, 0x10, 0x40, 0x50, 0x60, 0x70, 0xB0
JA, JEQ, JGT, JGE, JSET, JNE, EXIT = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x90

PROG_TYPE_CGROUP_DEVICE = 15
ATTACH_CGROUP_DEVICE = 6
F_ALLOW_MULTI = 2
F_REPLACE = 4
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
TYPE_BITS = {"b": DEV_BLOCK, "c": DEV_CHAR}
LICENSE = "Apache"


class Insn:
    """One instruction; `target` is a label name for jumps, resolved by `assemble`."""

    __slots__ = ("op", "dst", "src", "off", "imm", "target", "label")

    def __init__(self, op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
                 target: str | None = None) -> None:
        self.op, self.dst, self.src, self.off, self.imm = op, dst, src, off, imm
        self.target = target
        self.label: str | None = None

    def at(self, label: str) -> Insn:
        self.label = label
        return self

    def __repr__(self) -> str:
        return (f"Insn({self.op:#04x}, r{self.dst}, r{self.src}, off={self.off}, "
                f"imm={self.imm}{', ->' + self.target if self.target else ''})")


# --- the assembler ---------------------------------------------------------------------

def load_word(dst: int, src: int, off: int) -> Insn:
    return Insn(LDX | MEM | W, dst, src, off)


def alu32(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU | op | K, dst, 0, 0, imm)


def mov32_reg(dst: int, src: int) -> Insn:
    return Insn(ALU | MOV | X, dst, src)


def jump32(op: int, dst: int, imm: int, target: str) -> Insn:
    return Insn(JMP32 | op | K, dst, 0, 0, imm, target)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


def assemble(insns: list[Insn]) -> bytes:
    """Encode to the kernel's 8-byte format, resolving jump labels."""
    where = {insn.label: i for i, insn in enumerate(insns) if insn.label}
    out = bytearray()
    for i, insn in enumerate(insns):
        off = insn.off
        if insn.target is not None:
            if insn.target not in where:
                raise ValueError(f"bpf: undefined label {insn.target}")
            off = where[insn.target] - (i + 1)
        if not -0x8000 <= off <= 0x7FFF:
            raise ValueError(f"bpf: jump from {i} out of range")
        out += struct.pack("<BBhi", insn.op, (insn.src << 4) | insn.dst, off,
                           _s32(insn.imm))
    return bytes(out)


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# --- the device filter -----------------------------------------------------------------

def device_program(state: DeviceState) -> list[Insn]:
    """The filter for `state`. Registers: r2 type, r3 access, r4 major, r5 minor, r1
    scratch once the context is read."""
    prog = [
        load_word(2, 1, 0), alu32(AND, 2, 0xFFFF),
        load_word(3, 1, 0), alu32(RSH, 3, 16),
        load_word(4, 1, 4),
        load_word(5, 1, 8),
    ]
    for n, rule in enumerate(state.rules()):
        nxt = f"rule{n + 1}"
        block = [jump32(JNE, 2, TYPE_BITS[rule.type], nxt)]
        bits = sum(ACCESS_BITS[ch] for ch in rule.access)
        if bits != ACC_MKNOD | ACC_READ | ACC_WRITE or not rule.allow:
            block += [mov32_reg(1, 3), alu32(AND, 1, bits)]
            if rule.allow:  # every requested bit granted
                block.append(Insn(JMP32 | JNE | X, 1, 3, target=nxt))
            else:  # any requested bit denied
                block.append(jump32(JEQ, 1, 0, nxt))
        if rule.major >= 0:
            block.append(jump32(JNE, 4, rule.major, nxt))
        if rule.minor >= 0:
            block.append(jump32(JNE, 5, rule.minor, nxt))
        block += [alu32(MOV, 0, 1 if rule.allow else 0), exit_()]
        block[0].at(f"rule{n}")
        prog += block
    prog += [alu32(MOV, 0, 1 if state.default_allow else 0).at(f"rule{len(state.rules())}"),
             exit_()]
    return prog


def compile_state(state: DeviceState) -> bytes:
    return assemble(device_program(state))


# --- the kernel side -------------------------------------------------------------------

def attach(cgroup_dir: str, code: bytes) -> None:
    """Load `code` and attach it to `cgroup_dir`; programs attached there before are
    replaced (one: atomically; several: detached after the new one is in place)."""
    dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = _attached(dirfd)
        try:
            _replace(dirfd, code, old)
        finally:
            for fd in old:
                os.close(fd)
    finally:
        os.close(dirfd)


def _load(code: bytes) -> int:
    from ocirt.linux import libc

    try:
        prog, _ = libc.bpf_prog_load(PROG_TYPE_CGROUP_DEVICE, code, LICENSE)
    except OSError as exc:
        log = getattr(exc, "verifier_log", "").strip().splitlines()
        raise OSError(exc.errno, f"{exc.strerror} (verifier: {log[-1] if log else 'no log'})",
                      exc.filename) from None
    return prog


def _replace(dirfd: int, code: bytes, old: list[int]) -> None:
    from ocirt.linux import libc

    prog = _load(code)
    try:
        if len(old) == 1:
            try:
                libc.bpf_prog_attach(dirfd, prog, ATTACH_CGROUP_DEVICE,
                                     F_ALLOW_MULTI | F_REPLACE, old[0])
                return
            except OSError:
                pass  # no BPF_F_REPLACE here: attach, then detach the old one
        libc.bpf_prog_attach(dirfd, prog, ATTACH_CGROUP_DEVICE, F_ALLOW_MULTI)
        for fd in old:
            libc.bpf_prog_detach(dirfd, fd, ATTACH_CGROUP_DEVICE)
    finally:
        os.close(prog)


def _attached(dirfd: int) -> list[int]:
    """fds of the device programs attached to the cgroup `dirfd`."""
    from ocirt.linux import libc

    fds: list[int] = []
    try:
        for prog_id in libc.bpf_prog_query(dirfd, ATTACH_CGROUP_DEVICE):
            fds.append(libc.bpf_prog_get_fd_by_id(prog_id))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def attached_count(cgroup_dir: str) -> int:
    """How many device programs are attached to `cgroup_dir` (for tests and checks)."""
    from ocirt.linux import libc

    dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return len(libc.bpf_prog_query(dirfd, ATTACH_CGROUP_DEVICE))
    finally:
        os.close(dirfd)
