"""Handlers for the commands that work through the container's cgroup: update, pause,
resume, events, ps. Each turns flags into arguments and makes one call into
`ocirt.runtime` (control, events, ps)."""

from __future__ import annotations

import sys

from ocirt.cli.parser import Options
from ocirt.errors import OcirtError, UsageError
from ocirt.state import Store

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from ocirt.cli import Globals


def pause(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.control import pause as do_pause

    do_pause(Store(g.root), args[0])
    return 0


def resume(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.control import resume as do_resume

    do_resume(Store(g.root), args[0])
    return 0


def ps(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.control import processes
    from ocirt.runtime.ps import ps_table

    if opts.format not in ("table", "json"):
        raise OcirtError("invalid format option")
    pids = processes(Store(g.root), args[0])
    if opts.format == "json":
        from ocirt.jsonio import dumps

        sys.stdout.write(dumps(pids) + "\n")
    else:
        sys.stdout.write(ps_table(pids, args[1:]))
    return 0


def events(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.jsonio import dumps
    from ocirt.runtime.events import events as do_events

    interval = parse_duration(opts.interval, "interval")
    if interval <= 0:
        raise OcirtError("duration interval must be greater than 0")

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(dumps(event) + "\n")
        sys.stdout.flush()

    do_events(Store(g.root), args[0], interval, opts.stats, emit)
    return 0


def update(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.control import intel_rdt_for_update, update_intel_rdt
    from ocirt.runtime.control import update as do_update

    rdt = opts.l3_cache_schema or opts.mem_bw_schema
    rdt_root = intel_rdt_for_update(opts.l3_cache_schema, opts.mem_bw_schema) if rdt else ""
    if opts.resources:
        resources = read_resources(opts.resources)
    else:
        resources = resources_from_flags(opts)
    do_update(Store(g.root), args[0], resources)
    if rdt:
        update_intel_rdt(Store(g.root), args[0], rdt_root, opts.l3_cache_schema,
                         opts.mem_bw_schema)
    return 0


def read_resources(source: str) -> dict[str, Any]:
    """LinuxResources JSON from a file or, for "-", standard input (runc then ignores
    every other flag)."""
    from ocirt.jsonio import loads

    try:
        if source == "-":
            text = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                text = f.read()
    except OSError as exc:
        from ocirt.errors import os_error_text

        raise OcirtError(f"open {source}: {os_error_text(exc)}") from None
    try:
        value = loads(text)
    except ValueError as exc:
        raise OcirtError(f"update --resources {source}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OcirtError(f"update --resources {source}: must be a JSON object")
    return value


def resources_from_flags(opts: Options) -> dict[str, Any]:
    """runc's update flags as a LinuxResources delta."""
    memory: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if opts.blkio_weight:
        weight = _int(opts.blkio_weight, "blkio-weight", 0, (1 << 16) - 1)
        if weight:
            out["blockIO"] = {"weight": weight}
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if getattr(opts, flag):
            cpu[key] = getattr(opts, flag)
    if opts.cpu_idle:
        cpu["idle"] = _int(opts.cpu_idle, "cpu-idle", -(1 << 63), (1 << 63) - 1)
    for flag, key in (("cpu_burst", "burst"), ("cpu_period", "period"),
                      ("cpu_rt_period", "realtimePeriod"), ("cpu_share", "shares")):
        value = getattr(opts, flag)
        if value:
            cpu[key] = _int(value, flag.replace("_", "-"), 0, (1 << 64) - 1)
    for flag, key in (("cpu_quota", "quota"), ("cpu_rt_runtime", "realtimeRuntime")):
        value = getattr(opts, flag)
        if value:
            cpu[key] = _int(value, flag.replace("_", "-"), -(1 << 63), (1 << 63) - 1)
    for flag, key in (("memory", "limit"), ("memory_swap", "swap"), ("kernel_memory", "kernel"),
                      ("kernel_memory_tcp", "kernelTCP"),
                      ("memory_reservation", "reservation")):
        value = getattr(opts, flag)
        if value:
            memory[key] = -1 if value == "-1" else ram_in_bytes(value, flag.replace("_", "-"))
    if opts.pids_limit:
        out["pids"] = {"limit": _int(opts.pids_limit, "pids-limit", -(1 << 63), (1 << 63) - 1)}
    if memory:
        out["memory"] = memory
    if cpu:
        out["cpu"] = cpu
    return out


def _int(text: str, flag: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise UsageError(f"invalid value for {flag}: {text!r} is not an integer") from None
    if not lo <= value <= hi:
        raise UsageError(f"invalid value for {flag}: {text} is out of range")
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str, flag: str = "memory") -> int:
    """docker/go-units RAMInBytes: "128m", "1.5g", "512MiB", "1024" (binary units)."""
    s = text.strip().lower()
    for suffix in ("ib", "b"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    unit = s[-1] if s and s[-1] in _UNITS else ""
    number = s[:-1].rstrip() if unit else s
    try:
        if not number or not number.replace(".", "", 1).isdigit():
            raise ValueError
        value = float(number) if "." in number else int(number)
    except ValueError:
        raise UsageError(f"invalid value for {flag}: invalid size: {text!r}") from None
    return int(value * _UNITS[unit])


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_duration(text: str, flag: str) -> float:
    """A Go duration ("5s", "1m30s", "250ms", "1.5h") in seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if not s:
        raise UsageError(f'invalid value "{text}" for flag -{flag}: parse error')
    if s == "0":
        return 0.0
    total = 0.0
    while s:
        i = 0
        while i < len(s) and s[i] in "0123456789.":
            i += 1
        j = i
        while j < len(s) and s[j] not in "0123456789.":
            j += 1
        number, unit = s[:i], s[i:j]
        if not number or unit not in _DURATION_UNITS or number.count(".") > 1:
            raise UsageError(f'invalid value "{text}" for flag -{flag}: parse error')
        total += float(number) * _DURATION_UNITS[unit]
        s = s[j:]
    return sign * total
