"""`linux.resources` (runtime-spec) checked and decoded, so the managers work from typed
values and every error names its field (`linux.resources.memory.limit: must be an integer`).

Each section keeps only the keys that were given: an absent key leaves the cgroup's
value alone, as the spec says. `merge` folds an `update` into the stored resources with
runc's rules (per-device lists are upserted by major:minor).
"""

from __future__ import annotations

from ocirt.errors import ConfigError

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

INT64 = (-(1 << 63), (1 << 63) - 1)
UINT64 = (0, (1 << 64) - 1)
UINT32 = (0, (1 << 32) - 1)
UINT16 = (0, (1 << 16) - 1)

# key -> (kind, range); kind is int, bool or str
MEMORY_FIELDS: dict[str, tuple[type, tuple[int, int] | None]] = {
    "limit": (int, INT64), "reservation": (int, INT64), "swap": (int, INT64),
    "kernel": (int, INT64), "kernelTCP": (int, INT64), "swappiness": (int, UINT64),
    "disableOOMKiller": (bool, None), "useHierarchy": (bool, None),
    "checkBeforeUpdate": (bool, None),
}
CPU_FIELDS: dict[str, tuple[type, tuple[int, int] | None]] = {
    "shares": (int, UINT64), "quota": (int, INT64), "burst": (int, UINT64),
    "period": (int, UINT64), "realtimeRuntime": (int, INT64),
    "realtimePeriod": (int, UINT64), "cpus": (str, None), "mems": (str, None),
    "idle": (int, INT64),
}
THROTTLES = ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
             "throttleWriteIOPSDevice")


class DeviceRule:
    """One device-cgroup rule; major/minor -1 mean any, type "a" means every device."""

    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str = "a", major: int = -1, minor: int = -1,
                 access: str = "rwm") -> None:
        self.allow = allow
        self.type = type
        self.major = major
        self.minor = minor
        self.access = access

    def cgroup_string(self) -> str:
        """The v1 devices.allow/deny syntax: `c 1:3 rwm`, `a *:* rwm`."""
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceRule) and self.astuple() == other.astuple()

    def __hash__(self) -> int:
        return hash(self.astuple())

    def astuple(self) -> tuple[bool, str, int, int, str]:
        return (self.allow, self.type, self.major, self.minor, self.access)

    def __repr__(self) -> str:
        return f"DeviceRule({'allow' if self.allow else 'deny'} {self.cgroup_string()})"


class Resources:
    """Decoded linux.resources; empty sections are empty dicts/lists, absent values absent."""

    def __init__(self) -> None:
        self.memory: dict[str, Any] = {}
        self.cpu: dict[str, Any] = {}
        self.pids_limit: int | None = None
        self.blkio: dict[str, Any] = {}
        self.hugepages: list[tuple[str, int]] = []
        self.network: dict[str, Any] = {}
        self.rdma: dict[str, dict[str, int]] = {}
        self.unified: dict[str, str] = {}
        self.devices: list[DeviceRule] | None = None

    def wants(self, section: str) -> bool:
        """Whether anything was asked of a section (names as in the spec)."""
        value = {"memory": self.memory, "cpu": self.cpu, "pids": self.pids_limit is not None,
                 "blockIO": self.blkio, "hugepageLimits": self.hugepages,
                 "network": self.network, "rdma": self.rdma, "unified": self.unified,
                 "devices": self.devices}[section]
        return bool(value)

    def limits_requested(self) -> bool:
        """Anything besides device rules (which rootless containers skip, as runc does)."""
        return any(self.wants(s) for s in ("memory", "cpu", "pids", "blockIO",
                                           "hugepageLimits", "network", "rdma", "unified"))


def pids_max(limit: int) -> str:
    """pids.max for linux.resources.pids.limit: -1 (any negative) is "max"; 0 is a real
    limit (runtime-spec 1.3) that runc 1.5 writes as 1, as systemd's TasksMax cannot be
    0: either way no process of the container can fork."""
    return str(limit) if limit > 0 else "1" if limit == 0 else "max"


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _value(raw: Any, kind: type, bounds: tuple[int, int] | None, where: str) -> Any:
    if kind is bool:
        if not isinstance(raw, bool):
            raise _fail(where, "must be a boolean")
        return raw
    if kind is str:
        if not isinstance(raw, str):
            raise _fail(where, "must be a string")
        return raw
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise _fail(where, "must be an integer")
    if bounds is not None and not bounds[0] <= raw <= bounds[1]:
        raise _fail(where, f"{raw} is out of range")
    return raw


def _object(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, "must be an object")
    return raw


def _array(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise _fail(where, "must be an array")
    return raw


def _fields(raw: Any, table: dict[str, tuple[type, tuple[int, int] | None]],
            where: str) -> dict[str, Any]:
    obj = _object(raw, where)
    out = {}
    for key, (kind, bounds) in table.items():
        if obj.get(key) is not None:
            out[key] = _value(obj[key], kind, bounds, f"{where}.{key}")
    return out


def parse(raw: dict[str, Any] | None, where: str = "linux.resources") -> Resources:
    """Check and decode a LinuxResources object (None gives empty Resources)."""
    res = Resources()
    if raw is None:
        return res
    obj = _object(raw, where)
    if obj.get("memory") is not None:
        res.memory = _fields(obj["memory"], MEMORY_FIELDS, f"{where}.memory")
    if obj.get("cpu") is not None:
        res.cpu = _fields(obj["cpu"], CPU_FIELDS, f"{where}.cpu")
    if obj.get("pids") is not None:
        pids = _object(obj["pids"], f"{where}.pids")
        if pids.get("limit") is not None:
            res.pids_limit = _value(pids["limit"], int, INT64, f"{where}.pids.limit")
    if obj.get("blockIO") is not None:
        res.blkio = _blkio(obj["blockIO"], f"{where}.blockIO")
    if obj.get("hugepageLimits") is not None:
        res.hugepages = _hugepages(obj["hugepageLimits"], f"{where}.hugepageLimits")
    if obj.get("network") is not None:
        res.network = _network(obj["network"], f"{where}.network")
    if obj.get("rdma") is not None:
        res.rdma = _rdma(obj["rdma"], f"{where}.rdma")
    if obj.get("unified") is not None:
        res.unified = _unified(obj["unified"], f"{where}.unified")
    if obj.get("devices") is not None:
        res.devices = parse_device_rules(obj["devices"], f"{where}.devices")
    return res


def _device_numbers(entry: dict[str, Any], where: str) -> tuple[int, int]:
    if entry.get("major") is None or entry.get("minor") is None:
        raise _fail(where, "major and minor are required")
    return (_value(entry["major"], int, INT64, f"{where}.major"),
            _value(entry["minor"], int, INT64, f"{where}.minor"))


def _blkio(raw: Any, where: str) -> dict[str, Any]:
    obj = _object(raw, where)
    out: dict[str, Any] = {}
    for key in ("weight", "leafWeight"):
        if obj.get(key) is not None:
            out[key] = _value(obj[key], int, UINT16, f"{where}.{key}")
    if obj.get("weightDevice") is not None:
        devices = []
        for i, entry in enumerate(_array(obj["weightDevice"], f"{where}.weightDevice")):
            w = f"{where}.weightDevice[{i}]"
            _object(entry, w)
            major, minor = _device_numbers(entry, w)
            weight = entry.get("weight")
            leaf = entry.get("leafWeight")
            devices.append((major, minor,
                            None if weight is None else _value(weight, int, UINT16,
                                                               f"{w}.weight"),
                            None if leaf is None else _value(leaf, int, UINT16,
                                                             f"{w}.leafWeight")))
        out["weightDevice"] = devices
    for key in THROTTLES:
        if obj.get(key) is not None:
            devices = []
            for i, entry in enumerate(_array(obj[key], f"{where}.{key}")):
                w = f"{where}.{key}[{i}]"
                _object(entry, w)
                major, minor = _device_numbers(entry, w)
                if entry.get("rate") is None:
                    raise _fail(w, "rate is required")
                devices.append((major, minor, _value(entry["rate"], int, UINT64, f"{w}.rate")))
            out[key] = devices
    return out


def _hugepages(raw: Any, where: str) -> list[tuple[str, int]]:
    out = []
    for i, entry in enumerate(_array(raw, where)):
        w = f"{where}[{i}]"
        _object(entry, w)
        size = _value(entry.get("pageSize"), str, None, f"{w}.pageSize")
        if not size or "/" in size:
            raise _fail(f"{w}.pageSize", f"invalid page size {size!r}")
        if entry.get("limit") is None:
            raise _fail(w, "limit is required")
        out.append((size, _value(entry["limit"], int, UINT64, f"{w}.limit")))
    return out


def _network(raw: Any, where: str) -> dict[str, Any]:
    obj = _object(raw, where)
    out: dict[str, Any] = {}
    if obj.get("classID") is not None:
        out["classID"] = _value(obj["classID"], int, UINT32, f"{where}.classID")
    if obj.get("priorities") is not None:
        prios = []
        for i, entry in enumerate(_array(obj["priorities"], f"{where}.priorities")):
            w = f"{where}.priorities[{i}]"
            _object(entry, w)
            name = _value(entry.get("name"), str, None, f"{w}.name")
            if not name or any(ch.isspace() for ch in name):
                raise _fail(f"{w}.name", f"invalid interface name {name!r}")
            prios.append((name, _value(entry.get("priority", 0), int, UINT32,
                                       f"{w}.priority")))
        out["priorities"] = prios
    return out


def _rdma(raw: Any, where: str) -> dict[str, dict[str, int]]:
    out = {}
    for name, entry in _object(raw, where).items():
        w = f"{where}.{name}"
        if not name or any(ch.isspace() for ch in name):
            raise _fail(w, f"invalid device name {name!r}")
        limits = {}
        for key in ("hcaHandles", "hcaObjects"):
            if _object(entry, w).get(key) is not None:
                limits[key] = _value(entry[key], int, UINT32, f"{w}.{key}")
        out[name] = limits
    return out


def _unified(raw: Any, where: str) -> dict[str, str]:
    out = {}
    for key, value in _object(raw, where).items():
        w = f"{where}.{key}"
        if not key or "/" in key or key in (".", ".."):
            raise _fail(w, "must be a file name (no slashes)")
        out[key] = _value(value, str, None, w)
    return out


def parse_device_rules(raw: Any, where: str) -> list[DeviceRule]:
    rules = []
    for i, entry in enumerate(_array(raw, where)):
        w = f"{where}[{i}]"
        _object(entry, w)
        allow = _value(entry.get("allow"), bool, None, f"{w}.allow")
        kind = entry.get("type") or "a"
        if kind not in ("a", "b", "c"):
            raise _fail(f"{w}.type", f"invalid device type {kind!r}")
        major = -1 if entry.get("major") is None else _value(entry["major"], int, INT64,
                                                              f"{w}.major")
        minor = -1 if entry.get("minor") is None else _value(entry["minor"], int, INT64,
                                                              f"{w}.minor")
        if major > UINT32[1] or minor > UINT32[1]:
            raise _fail(w, "major/minor out of range")
        access = entry.get("access") or "rwm"
        _value(access, str, None, f"{w}.access")
        if not set(access) <= set("rwm"):
            raise _fail(f"{w}.access", f"invalid access {access!r} (only r, w and m)")
        rules.append(DeviceRule(allow, kind, major, minor, "".join(
            ch for ch in "rwm" if ch in access)))
    return rules


# --- update ---------------------------------------------------------------------------

def merge(stored: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """The resources after `update` (both raw LinuxResources): scalars replace, objects
    merge key by key, per-device lists are upserted by major:minor (runc's rules), other
    lists replace."""
    out = _copy(stored or {})
    for key, value in update.items():
        if value is None:
            continue
        if key == "blockIO" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_blkio(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            merged.update({k: v for k, v in value.items() if v is not None})
            out[key] = merged
        else:
            out[key] = _copy(value)
    return out


def _merge_blkio(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        if key in ("weightDevice", *THROTTLES) and isinstance(value, list):
            entries = [dict(e) for e in out.get(key) or []]
            for entry in value:
                found = next((e for e in reversed(entries)
                              if (e.get("major"), e.get("minor"))
                              == (entry.get("major"), entry.get("minor"))), None)
                if found is None:
                    entries.append(dict(entry))
                else:
                    found.update({k: v for k, v in entry.items() if v is not None})
            out[key] = entries
        elif value is not None:
            out[key] = value
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
