"""Container statistics in the shape of runc's `events` (types.Stats of runc 1.1): what
`ocirt events --stats` prints under "data", read from the v1 or v2 cgroup files.

Values a controller does not provide are left at zero (and left out where runc's JSON
tags say omitempty), so the shape is the same on every host.
"""

from __future__ import annotations

import os

from ocirt.cgroups import fs

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

NANOS_PER_TICK = 1_000_000_000 // 100  # cpuacct.stat counts USER_HZ (100) ticks


def empty() -> dict[str, Any]:
    return {
        "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
        "cpuset": {},
        "memory": {"usage": _entry(0, 0, 0, 0), "swap": _entry(0, 0, 0, 0),
                   "kernel": _entry(0, 0, 0, 0), "kernelTCP": _entry(0, 0, 0, 0)},
        "pids": {},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


# Key order of runc's structs (Go encodes fields in declaration order).
_ORDER = {
    "usage": ("total", "percpu", "percpu_kernel", "percpu_user", "kernel", "user"),
    "cpuset": ("cpus", "cpu_exclusive", "mems", "mem_hardwall", "mem_exclusive",
               "memory_migrate", "memory_spread_page", "memory_spread_slab",
               "memory_pressure", "sched_load_balance", "sched_relax_domain_level"),
    "memory": ("cache", "usage", "swap", "kernel", "kernelTCP", "raw"),
}


def _ordered(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d}


def finish(out: dict[str, Any]) -> dict[str, Any]:
    out["cpu"]["usage"] = _ordered(out["cpu"]["usage"], _ORDER["usage"])
    out["cpuset"] = _ordered(out["cpuset"], _ORDER["cpuset"])
    out["memory"] = _ordered(out["memory"], _ORDER["memory"])
    return out


def _entry(limit: int, usage: int, peak: int, failcnt: int) -> dict[str, int]:
    out = {"limit": limit}
    if usage:
        out["usage"] = usage
    if peak:
        out["max"] = peak
    out["failcnt"] = failcnt
    return out


def _int(directory: str | None, name: str, default: int = 0) -> int:
    """An integer file; "max" reads as the largest u64 (as runc reports it)."""
    if directory is None:
        return default
    try:
        text = fs.read(directory, name).strip()
        return (1 << 64) - 1 if text == "max" else int(text)
    except (OSError, ValueError):
        return default


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """omitempty: only non-zero values."""
    if value:
        out[key] = value


# --- v1 --------------------------------------------------------------------------------

def v1_stats(paths: dict[str, str]) -> dict[str, Any]:
    out = empty()
    _v1_cpu(paths.get("cpuacct"), paths.get("cpu"), out["cpu"])
    _cpuset(paths.get("cpuset"), out["cpuset"])
    _v1_memory(paths.get("memory"), out["memory"])
    _pids(paths.get("pids"), out["pids"])
    _v1_blkio(paths.get("blkio"), out["blkio"])
    _v1_hugetlb(paths.get("hugetlb"), out["hugetlb"])
    return finish(out)


def _v1_cpu(acct: str | None, cpu: str | None, out: dict[str, Any]) -> None:
    usage = out["usage"]
    if acct is not None:
        _put(usage, "total", _int(acct, "cpuacct.usage"))
        for key, name in (("percpu", "cpuacct.usage_percpu"),
                          ("percpu_kernel", "cpuacct.usage_percpu_sys"),
                          ("percpu_user", "cpuacct.usage_percpu_user")):
            try:
                _put(usage, key, [int(v) for v in fs.read(acct, name).split()])
            except (OSError, ValueError):
                pass
        try:
            ticks = fs.read_keyed(acct, "cpuacct.stat")
        except OSError:
            ticks = {}
        usage["kernel"] = ticks.get("system", 0) * NANOS_PER_TICK
        usage["user"] = ticks.get("user", 0) * NANOS_PER_TICK
    if cpu is not None:
        try:
            stat = fs.read_keyed(cpu, "cpu.stat")
        except OSError:
            stat = {}
        _put(out["throttling"], "periods", stat.get("nr_periods", 0))
        _put(out["throttling"], "throttledPeriods", stat.get("nr_throttled", 0))
        _put(out["throttling"], "throttledTime", stat.get("throttled_time", 0))


def parse_list(text: str) -> list[int]:
    """A cpuset list ("0-3,8") as numbers."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _cpuset(directory: str | None, out: dict[str, Any]) -> None:
    if directory is None:
        return
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        try:
            _put(out, key, parse_list(fs.read(directory, name)))
        except (OSError, ValueError):
            pass
    for key in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                "memory_spread_page", "memory_spread_slab", "memory_pressure",
                "sched_load_balance", "sched_relax_domain_level"):
        out[key] = _int(directory, f"cpuset.{key}")


def _v1_memory(directory: str | None, out: dict[str, Any]) -> None:
    if directory is None:
        return
    for key, prefix in (("usage", "memory"), ("swap", "memory.memsw"),
                        ("kernel", "memory.kmem"), ("kernelTCP", "memory.kmem.tcp")):
        out[key] = _entry(_int(directory, f"{prefix}.limit_in_bytes"),
                          _int(directory, f"{prefix}.usage_in_bytes"),
                          _int(directory, f"{prefix}.max_usage_in_bytes"),
                          _int(directory, f"{prefix}.failcnt"))
    try:
        raw = fs.read_keyed(directory, "memory.stat")
    except OSError:
        raw = {}
    _put(out, "cache", raw.get("total_cache", raw.get("cache", 0)))
    _put(out, "raw", raw)


def _pids(directory: str | None, out: dict[str, Any]) -> None:
    if directory is None:
        return
    _put(out, "current", _int(directory, "pids.current"))
    limit = _int(directory, "pids.max")
    _put(out, "limit", 0 if limit == (1 << 64) - 1 else limit)


def _v1_blkio(directory: str | None, out: dict[str, Any]) -> None:
    if directory is None:
        return
    for key, names in (
            ("ioServiceBytesRecursive", ("blkio.io_service_bytes_recursive",
                                         "blkio.bfq.io_service_bytes_recursive",
                                         "blkio.throttle.io_service_bytes_recursive")),
            ("ioServicedRecursive", ("blkio.io_serviced_recursive",
                                     "blkio.bfq.io_serviced_recursive",
                                     "blkio.throttle.io_serviced_recursive"))):
        for name in names:
            if fs.exists(directory, name):
                _put(out, key, _blkio_entries(fs.read(directory, name)))
                break


def _blkio_entries(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        entry: dict[str, Any] = {}
        _put(entry, "major", int(major))
        _put(entry, "minor", int(minor))
        _put(entry, "op", fields[1])
        _put(entry, "value", int(fields[2]))
        entries.append(entry)
    return entries


def page_sizes() -> list[str]:
    """Huge page sizes as the hugetlb files name them ("2MB", "1GB")."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return []
    sizes = []
    for name in sorted(names):
        kib = int(name.removeprefix("hugepages-").removesuffix("kB"))
        for unit, factor in (("GB", 1 << 20), ("MB", 1 << 10), ("KB", 1)):
            if kib % factor == 0:
                sizes.append(f"{kib // factor}{unit}")
                break
    return sizes


def _v1_hugetlb(directory: str | None, out: dict[str, Any]) -> None:
    if directory is None:
        return
    for size in page_sizes():
        entry: dict[str, Any] = {}
        _put(entry, "usage", _int(directory, f"hugetlb.{size}.usage_in_bytes"))
        _put(entry, "max", _int(directory, f"hugetlb.{size}.max_usage_in_bytes"))
        entry["failcnt"] = _int(directory, f"hugetlb.{size}.failcnt")
        out[size] = entry


# --- v2 --------------------------------------------------------------------------------

def v2_stats(directory: str) -> dict[str, Any]:
    out = empty()
    _v2_cpu(directory, out["cpu"])
    _cpuset(directory if fs.exists(directory, "cpuset.cpus") else None, out["cpuset"])
    _v2_memory(directory, out["memory"])
    _pids(directory if fs.exists(directory, "pids.current") else None, out["pids"])
    if not out["pids"]:
        _put(out["pids"], "current", len(fs.procs(directory, recursive=False)))
    _v2_io(directory, out["blkio"])
    for size in page_sizes():
        if fs.exists(directory, f"hugetlb.{size}.current"):
            entry: dict[str, Any] = {}
            _put(entry, "usage", _int(directory, f"hugetlb.{size}.current"))
            try:
                entry["failcnt"] = fs.read_keyed(directory, f"hugetlb.{size}.events").get(
                    "max", 0)
            except OSError:
                entry["failcnt"] = 0
            out["hugetlb"][size] = entry
    return finish(out)


def _v2_cpu(directory: str, out: dict[str, Any]) -> None:
    try:
        stat = fs.read_keyed(directory, "cpu.stat")
    except OSError:
        return
    usage = out["usage"]
    _put(usage, "total", stat.get("usage_usec", 0) * 1000)
    usage["kernel"] = stat.get("system_usec", 0) * 1000
    usage["user"] = stat.get("user_usec", 0) * 1000
    _put(out["throttling"], "periods", stat.get("nr_periods", 0))
    _put(out["throttling"], "throttledPeriods", stat.get("nr_throttled", 0))
    _put(out["throttling"], "throttledTime", stat.get("throttled_usec", 0) * 1000)


def _v2_memory(directory: str, out: dict[str, Any]) -> None:
    if not fs.exists(directory, "memory.current"):
        return
    usage = _int(directory, "memory.current")
    limit = _int(directory, "memory.max")
    out["usage"] = _entry(limit, usage, _int(directory, "memory.peak"), 0)
    swap_usage = _int(directory, "memory.swap.current")
    swap_limit = _int(directory, "memory.swap.max")
    if swap_limit != (1 << 64) - 1:
        swap_limit += limit
    out["swap"] = _entry(swap_limit, swap_usage + usage, 0, 0)
    try:
        raw = fs.read_keyed(directory, "memory.stat")
    except OSError:
        raw = {}
    _put(out, "cache", raw.get("file", 0))
    _put(out, "raw", raw)


def _v2_io(directory: str, out: dict[str, Any]) -> None:
    try:
        text = fs.read(directory, "io.stat")
    except OSError:
        return
    by_bytes: list[dict[str, Any]] = []
    by_ios: list[dict[str, Any]] = []
    ops = {"rbytes": ("Read", by_bytes), "wbytes": ("Write", by_bytes),
           "rios": ("Read", by_ios), "wios": ("Write", by_ios)}
    for line in text.splitlines():
        fields = line.split()
        if not fields or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        for item in fields[1:]:
            key, _, value = item.partition("=")
            if key in ops:
                op, table = ops[key]
                entry: dict[str, Any] = {}
                _put(entry, "major", int(major))
                _put(entry, "minor", int(minor))
                entry["op"] = op
                _put(entry, "value", int(value))
                table.append(entry)
    _put(out, "ioServiceBytesRecursive", by_bytes)
    _put(out, "ioServicedRecursive", by_ios)
