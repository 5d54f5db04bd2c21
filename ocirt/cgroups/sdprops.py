"""The container's resources as systemd unit properties (runc's mapping).

`--systemd-cgroup` sends these with StartTransientUnit and with SetUnitProperties on
`update`, so that systemd knows the limits and keeps them when it re-applies a unit's
settings (a daemon-reload or another unit's change makes it rewrite the cgroup files);
the cgroupfs files are still written directly afterwards, as runc does, for what
systemd has no property for.

v2 (unified): MemoryMax/Low/High/Min/SwapMax, CPUWeight, CPUQuotaPerSecUSec with
CPUQuotaPeriodUSec, AllowedCPUs/AllowedMemoryNodes, TasksMax, IOWeight and the device
rules as DevicePolicy=strict + DeviceAllow; `unified` keys runc knows are mapped too.
v1: MemoryLimit, CPUShares, the CPU quota, BlockIOWeight, TasksMax and the device rules.
Pure: no D-Bus and no files here.
"""

from __future__ import annotations

from ocirt.cgroups import devices
from ocirt.cgroups.v2 import blkio_weight_to_io, shares_to_weight, swap_to_v2
from ocirt.errors import OcirtError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ocirt.cgroups.resources import DeviceRule, Resources

Property = tuple[str, tuple[str, "Any"]]
INFINITY = (1 << 64) - 1  # systemd's "infinity" for a uint64 property
PREFIX = "linux.resources"


def _u64(value: int) -> int:
    return INFINITY if value == -1 else value


def quota_per_sec(quota: int, period: int) -> int:
    """CPUQuotaPerSecUSec: quota per second of time, rounded up to 10 ms (systemd's
    granularity), or infinity for no quota (runc)."""
    if quota <= 0:
        return INFINITY
    per_sec = quota * 1_000_000 // period
    if per_sec % 10_000:
        per_sec = (per_sec // 10_000 + 1) * 10_000
    return per_sec


def cpu_mask(text: str, field: str) -> list[int]:
    """A cpuset list ("0-3,8") as systemd's AllowedCPUs byte mask (bit n = CPU n)."""
    bits: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise OcirtError(f"{PREFIX}.{field}: invalid list {text!r}") from None
        if first < 0 or last < first:
            raise OcirtError(f"{PREFIX}.{field}: invalid range {part!r}")
        bits.update(range(first, last + 1))
    mask = [0] * ((max(bits) // 8 + 1) if bits else 0)
    for bit in bits:
        mask[bit // 8] |= 1 << (bit % 8)
    return mask


def properties(res: Resources, full: Resources, unified: bool,
               rules: list[DeviceRule] | None = None) -> list[Property]:
    """The unit properties for `res` (a delta on update); `full` supplies the other
    half of pairs (quota/period, limit/swap); `rules` are the device rules to send
    (None: leave them as they are)."""
    props = (_v2(res, full) if unified else _v1(res, full))
    if rules is not None:
        props += device_properties(rules)
    return props


def _cpu_quota(res: Resources, full: Resources) -> list[Property]:
    cpu = res.cpu
    if not (cpu.get("quota") or cpu.get("period")):
        return []
    quota = cpu.get("quota") or full.cpu.get("quota") or 0
    period = cpu.get("period") or full.cpu.get("period") or 100000
    return [("CPUQuotaPeriodUSec", ("t", period)),
            ("CPUQuotaPerSecUSec", ("t", quota_per_sec(quota, period)))]


def _v2(res: Resources, full: Resources) -> list[Property]:
    props: list[Property] = []
    m = res.memory
    if m.get("limit"):
        props.append(("MemoryMax", ("t", _u64(m["limit"]))))
    if m.get("reservation"):
        props.append(("MemoryLow", ("t", _u64(m["reservation"]))))
    if m.get("swap"):
        swap = swap_to_v2(m["swap"], m.get("limit") or full.memory.get("limit", 0))
        props.append(("MemorySwapMax", ("t", _u64(swap))))
    if res.cpu.get("shares"):
        props.append(("CPUWeight", ("t", shares_to_weight(res.cpu["shares"]))))
    props += _cpu_quota(res, full)
    if res.cpu.get("cpus"):
        props.append(("AllowedCPUs", ("ay", cpu_mask(res.cpu["cpus"], "cpu.cpus"))))
    if res.cpu.get("mems"):
        props.append(("AllowedMemoryNodes", ("ay", cpu_mask(res.cpu["mems"], "cpu.mems"))))
    if res.pids_limit is not None:
        props.append(("TasksMax", ("t", INFINITY if res.pids_limit <= 0 else res.pids_limit)))
    if res.blkio.get("weight"):
        props.append(("IOWeight", ("t", blkio_weight_to_io(res.blkio["weight"]))))
    props += _unified(res.unified)
    return props


def _v1(res: Resources, full: Resources) -> list[Property]:
    props: list[Property] = []
    if res.memory.get("limit"):
        props.append(("MemoryLimit", ("t", _u64(res.memory["limit"]))))
    if res.cpu.get("shares"):
        props.append(("CPUShares", ("t", res.cpu["shares"])))
    props += _cpu_quota(res, full)
    if res.pids_limit is not None:
        props.append(("TasksMax", ("t", INFINITY if res.pids_limit <= 0 else res.pids_limit)))
    if res.blkio.get("weight"):
        props.append(("BlockIOWeight", ("t", res.blkio["weight"])))
    return props


_UNIFIED_MEMORY = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow",
                   "memory.min": "MemoryMin", "memory.max": "MemoryMax",
                   "memory.swap.max": "MemorySwapMax"}


def _unified(unified: dict[str, str]) -> list[Property]:
    """The `unified` keys runc turns into properties; the rest are only files."""
    props: list[Property] = []
    for key, value in unified.items():
        value = value.strip()
        field = f"unified.{key}"
        if key in _UNIFIED_MEMORY:
            props.append((_UNIFIED_MEMORY[key], ("t", _unified_int(value, field))))
        elif key == "pids.max":
            props.append(("TasksMax", ("t", _unified_int(value, field))))
        elif key == "cpu.weight":
            props.append(("CPUWeight", ("t", _unified_int(value, field))))
        elif key == "cpu.max":
            quota, _, period = value.partition(" ")
            period_us = _unified_int(period or "100000", field)
            per_sec = INFINITY if quota == "max" else quota_per_sec(
                _unified_int(quota, field), period_us)
            props += [("CPUQuotaPeriodUSec", ("t", period_us)),
                      ("CPUQuotaPerSecUSec", ("t", per_sec))]
        elif key in ("cpuset.cpus", "cpuset.mems"):
            name = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
            props.append((name, ("ay", cpu_mask(value, field))))
    return props


def _unified_int(value: str, field: str) -> int:
    if value == "max":
        return INFINITY
    try:
        number = int(value)
    except ValueError:
        raise OcirtError(f"{PREFIX}.{field}: {value!r} is not a number or max") from None
    if number < 0:
        raise OcirtError(f"{PREFIX}.{field}: {value!r} is negative")
    return number


def device_properties(rules: list[DeviceRule]) -> list[Property]:
    """DevicePolicy/DeviceAllow for the rules (runc's translation): strict, with the
    allowed devices as /dev/{char,block}/M:m, `char-<group>` for a wildcard minor and
    `char-*` for a wildcard major. systemd has no deny list: a deny-list ruleset that
    is not allow-all becomes strict with nothing allowed, and the cgroup's own device
    program (written after the unit starts) enforces the real rules."""
    state = devices.emulate(rules)
    if state.default_allow:
        if not state.exceptions:
            return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
        return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", []))]
    allow = []
    for (kind, major, minor), access in state.exceptions.items():
        if kind not in ("c", "b"):
            continue
        group = "char" if kind == "c" else "block"
        if major == -1:
            path = f"{group}-*"
        elif minor == -1:
            name = device_group(kind, major)
            if name is None:
                continue  # runc: no such group in /proc/devices, the rule is left out
            path = f"{group}-{name}"
        else:
            path = f"/dev/{group}/{major}:{minor}"
        allow.append((path, access))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", allow))]


def proc_devices() -> str:
    try:
        with open("/proc/devices") as f:
            return f.read()
    except OSError:
        return ""


def device_group(kind: str, major: int) -> str | None:
    """The driver name of a major number in /proc/devices ("Character devices:" or
    "Block devices:" section)."""
    section = None
    for line in proc_devices().splitlines():
        if line.endswith("devices:"):
            section = "c" if line.startswith("Character") else "b"
            continue
        parts = line.split()
        if section == kind and len(parts) == 2 and parts[0] == str(major):
            return parts[1]
    return None
