"""An interpreter for the cgroup device programs `ocirt.cgroups.bpf` assembles: the
tests run the exact bytes the kernel gets, so the rule logic is checked without root
(test-only code, so it lives here and not in the package)."""

from __future__ import annotations

import struct

from ocirt.cgroups.bpf import (
    ACCESS_BITS,
    ADD,
    ALU,
    ALU64,
    AND,
    EXIT,
    JA,
    JEQ,
    JGE,
    JGT,
    JMP,
    JMP32,
    JNE,
    JSET,
    LDX,
    LSH,
    MEM,
    MOV,
    OR,
    RSH,
    SUB,
    TYPE_BITS,
    W,
    X,
)


class BPFFault(Exception):
    """The program did something the kernel's verifier would have refused."""


def run(code: bytes, ctx: bytes, max_steps: int = 100_000) -> int:
    """Execute `code` with r1 pointing at `ctx`; returns r0 (the subset of eBPF that
    filters use: 32/64-bit ALU with K/X sources, loads from the context, jumps)."""
    if len(code) % 8:
        raise BPFFault("code length is not a multiple of 8")
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    regs = [0] * 11
    regs[1] = -1  # the context pointer: only loads relative to it are allowed
    pc = 0
    for _ in range(max_steps):
        if not 0 <= pc < len(insns):
            raise BPFFault(f"pc {pc} out of range")
        op, reg, off, imm = insns[pc]
        dst, src = reg & 0x0F, reg >> 4
        cls = op & 0x07
        pc += 1
        if cls == LDX:
            if op != LDX | MEM | W or regs[src] != -1:
                raise BPFFault(f"unsupported load {op:#x}")
            if not 0 <= off <= len(ctx) - 4:
                raise BPFFault(f"context read at {off} out of bounds")
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif cls in (ALU, ALU64):
            regs[dst] = _alu(op, regs[dst], regs[src] if op & X else imm, cls == ALU)
        elif cls in (JMP, JMP32):
            if op == JMP | EXIT:
                return regs[0] & 0xFFFFFFFF
            if _taken(op, regs[dst], regs[src] if op & X else imm, cls == JMP32):
                pc += off
        else:
            raise BPFFault(f"unsupported instruction class {cls:#x}")
    raise BPFFault("program did not finish")


def _alu(op: int, a: int, b: int, is32: bool) -> int:
    mask = 0xFFFFFFFF if is32 else 0xFFFFFFFFFFFFFFFF
    a &= mask
    b &= mask
    kind = op & 0xF0
    if kind == MOV:
        result = b
    elif kind == ADD:
        result = a + b
    elif kind == SUB:
        result = a - b
    elif kind == AND:
        result = a & b
    elif kind == OR:
        result = a | b
    elif kind == LSH:
        result = a << (b & (31 if is32 else 63))
    elif kind == RSH:
        result = a >> (b & (31 if is32 else 63))
    else:
        raise BPFFault(f"unsupported ALU operation {op:#x}")
    return result & mask


def _taken(op: int, a: int, b: int, is32: bool) -> bool:
    mask = 0xFFFFFFFF if is32 else 0xFFFFFFFFFFFFFFFF
    a &= mask
    b &= mask
    kind = op & 0xF0
    if kind == JA:
        return True
    if kind == JEQ:
        return a == b
    if kind == JNE:
        return a != b
    if kind == JGT:
        return a > b
    if kind == JGE:
        return a >= b
    if kind == JSET:
        return bool(a & b)
    raise BPFFault(f"unsupported jump {op:#x}")


def context(kind: str, major: int, minor: int, access: str) -> bytes:
    """The kernel's struct bpf_cgroup_dev_ctx for one access."""
    bits = sum(ACCESS_BITS[ch] for ch in access)
    return struct.pack("<III", TYPE_BITS[kind] | (bits << 16), major, minor)


def decide(code: bytes, kind: str, major: int, minor: int, access: str) -> bool:
    return run(code, context(kind, major, minor, access)) == 1
