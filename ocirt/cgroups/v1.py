"""The cgroup v1 manager (also used on hybrid hosts, where the container joins the same
path in the controller-less cgroup2 hierarchy as well, as runc does).

One directory per hierarchy; `paths` maps every controller (and `name=systemd`, and ""
for cgroup2 on hybrid hosts) to the container's directory in its hierarchy. Resources
are written controller by controller in runc's order and with runc's ordering rules
(memory before/after swap, CFS period/quota and RT period/runtime retried in the other
order when the kernel refuses the first).
"""

from __future__ import annotations

import errno
import os
import time

from ocirt import log
from ocirt.cgroups import fs, v1_frozen, v2_frozen
from ocirt.cgroups.base import PREFIX, FsManager
from ocirt.cgroups.resources import pids_max
from ocirt.errors import OcirtError, errno_text

TYPE_CHECKING = False  # importing typing costs ~2 ms on the `state` path
if TYPE_CHECKING:
    from typing import Any

    from ocirt.cgroups.resources import Resources

# runc's pause loop: rewrite FROZEN while the kernel reports FREEZING.
FREEZE_TRIES = 1000


class V1Manager(FsManager):
    name = "v1"

    def __init__(self, paths: dict[str, str], **kw: Any) -> None:
        super().__init__(**kw)
        self._paths = dict(paths)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V1Manager:
        return cls(data.get("paths") or {}, rootless=bool(data.get("rootless")),
                   explicit=bool(data.get("explicit")), made=data.get("made"),
                   resources=data.get("resources"))

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def dirs(self) -> list[str]:
        seen: list[str] = []
        for directory in self._paths.values():
            if directory not in seen:
                seen.append(directory)
        return seen

    def _drop(self, directory: str) -> None:
        self._paths = {k: v for k, v in self._paths.items() if v != directory}

    def _extra_state(self) -> dict[str, Any]:
        return {"paths": self._paths}

    def _prepare(self, made: list[str]) -> None:
        cpuset = self._paths.get("cpuset")
        if cpuset is None:
            return
        for directory in made:  # outermost first: each copies from its parent
            if directory == cpuset or cpuset.startswith(directory + "/"):
                _inherit_cpuset(directory)

    # -- resources -----------------------------------------------------------------------

    def _set(self, res: Resources, full: Resources, devices: bool) -> None:
        if res.unified:
            raise OcirtError(f"{PREFIX}.unified: cannot use unified resources on a cgroup v1 "
                             "host (invalid configuration)")
        self._check_controllers(res)
        p = self._paths
        if res.cpu.get("cpus") is not None or res.cpu.get("mems") is not None:
            _set_cpuset(p["cpuset"], res)
        if devices:
            self._set_devices(res)
        if res.memory:
            _set_memory(p["memory"], res)
        if _cpu_fields(res):
            _set_cpu(p["cpu"], res)
        if res.pids_limit is not None:
            limit = pids_max(res.pids_limit)
            fs.write(p["pids"], "pids.max", limit, f"{PREFIX}.pids.limit")
        if res.blkio:
            _set_blkio(p["blkio"], res)
        if res.hugepages:
            self._set_hugetlb(res)
        if "classID" in res.network:
            fs.write(p["net_cls"], "net_cls.classid", str(res.network["classID"]),
                     f"{PREFIX}.network.classID")
        for name, prio in res.network.get("priorities", []):
            fs.write(p["net_prio"], "net_prio.ifpriomap", f"{name} {prio}",
                     f"{PREFIX}.network.priorities")
        if res.rdma:
            _set_rdma(p["rdma"], res)

    def _check_controllers(self, res: Resources) -> None:
        needs = []
        if res.cpu.get("cpus") is not None or res.cpu.get("mems") is not None:
            needs.append(("cpu.cpus", "cpuset"))
        if _cpu_fields(res):
            needs.append(("cpu", "cpu"))
        for section, field, controller in (
                ("memory", "memory", "memory"), ("pids", "pids", "pids"),
                ("blockIO", "blockIO", "blkio"), ("rdma", "rdma", "rdma")):
            if res.wants(section):
                needs.append((field, controller))
        if "classID" in res.network:
            needs.append(("network.classID", "net_cls"))
        if res.network.get("priorities"):
            needs.append(("network.priorities", "net_prio"))
        for field, controller in needs:
            if controller not in self._paths:
                raise self._missing(field, controller)

    def _set_devices(self, res: Resources) -> None:
        from ocirt.cgroups import devices as dev

        rules = (res.devices or []) + self.default_rules
        state = dev.emulate(rules)  # refuses rule sets v1 would silently get wrong
        directory = self._paths.get("devices")
        if directory is None:
            if not self.rootless:
                log.warning("the devices cgroup is not mounted: device rules are not enforced")
            return
        from ocirt.linux.proc import in_user_namespace

        if self.rootless or in_user_namespace():
            return  # the kernel refuses device rules from a user namespace (runc skips)
        for name, line in dev.write_plan(state):
            fs.write(directory, name, line, f"{PREFIX}.devices")

    def _set_hugetlb(self, res: Resources) -> None:
        directory = self._paths.get("hugetlb")
        if directory is not None:
            for size, limit in res.hugepages:
                field = f"{PREFIX}.hugepageLimits[{size}]"
                fs.write(directory, f"hugetlb.{size}.limit_in_bytes", str(limit), field)
                if fs.exists(directory, f"hugetlb.{size}.rsvd.limit_in_bytes"):
                    fs.write(directory, f"hugetlb.{size}.rsvd.limit_in_bytes", str(limit),
                             field)
            return
        unified = self._paths.get("")
        size = res.hugepages[0][0]
        if unified is not None and fs.exists(unified, f"hugetlb.{size}.max"):
            from ocirt.cgroups.v2 import set_hugetlb

            set_hugetlb(unified, res)  # hybrid host with hugetlb on cgroup2
            return
        raise self._missing("hugepageLimits", "hugetlb")

    # -- freezer -------------------------------------------------------------------------

    def is_frozen(self) -> bool:
        directory = self._paths.get("freezer")
        if directory is None:
            return v2_frozen(self._paths.get("") or "")
        return v1_frozen(directory)

    def freeze(self) -> None:
        directory = self._paths.get("freezer")
        if directory is None:
            self._unified_freeze("1")
            return
        field = "freezer"
        for i in range(FREEZE_TRIES):
            if i % 50 == 49:  # let new processes settle, then try again
                fs.write(directory, "freezer.state", "THAWED", field)
                time.sleep(0.01)
            fs.write(directory, "freezer.state", "FROZEN", field)
            if i % 25 == 24:
                time.sleep(0.00001)
            state = fs.read(directory, "freezer.state").strip()
            if state == "FROZEN":
                return
            if state != "FREEZING":
                raise OcirtError(f"unexpected freezer state {state} after writing FROZEN")
        fs.write(directory, "freezer.state", "THAWED", field)
        raise OcirtError(f"unable to freeze {directory} (still FREEZING)")

    def thaw(self) -> None:
        directory = self._paths.get("freezer")
        if directory is None:
            self._unified_freeze("0")
            return
        if os.path.isdir(directory):
            fs.write(directory, "freezer.state", "THAWED", "freezer")

    def _unified_freeze(self, value: str) -> None:
        unified = self._paths.get("")
        if unified is None:
            if value == "1":
                raise OcirtError("cannot freeze: no freezer cgroup for this container")
            return
        from ocirt.cgroups.v2 import set_frozen

        set_frozen(unified, value == "1")

    def stats(self) -> dict[str, Any]:
        from ocirt.cgroups.stats import v1_stats

        return v1_stats(self._paths)


# --- the setters ------------------------------------------------------------------------

def _inherit_cpuset(directory: str) -> None:
    """A new cpuset cgroup starts with no CPUs and no memory nodes, and no process can
    join it until it has some: copy them from the parent."""
    parent = os.path.dirname(directory)
    for name in ("cpuset.cpus", "cpuset.mems"):
        try:
            if fs.read(directory, name).strip():
                continue
            value = fs.read(parent, name).strip()
            if value:
                fs.write_raw(os.path.join(directory, name), value)
        except OSError as exc:
            raise OcirtError(f"set up cpuset cgroup {directory}/{name}: "
                             f"{errno_text(exc.errno or 0)}") from None


def _set_cpuset(directory: str, res: Resources) -> None:
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        value = res.cpu.get(key)
        if value:
            fs.write(directory, name, value, f"{PREFIX}.cpu.{key}")


def _cpu_fields(res: Resources) -> bool:
    return any(k in res.cpu for k in ("shares", "quota", "period", "burst", "realtimeRuntime",
                                      "realtimePeriod", "idle"))


def _write_pair(directory: str, first: tuple[str, str, str], second: tuple[str, str, str]
                ) -> None:
    """Write `first` then `second`; when the kernel refuses `first` with EINVAL (the
    old value of `second` does not fit it) write `second` first and retry."""
    name, value, field = first
    try:
        fs.write_raw(os.path.join(directory, name), value)
        retry = False
    except OSError as exc:
        if exc.errno != errno.EINVAL or not second[1]:
            raise fs.write_error(field, os.path.join(directory, name), value, exc) from None
        retry = True
    if second[1]:
        fs.write(directory, second[0], second[1], second[2])
    if retry:
        fs.write(directory, name, value, field)


def _set_cpu(directory: str, res: Resources) -> None:
    cpu = res.cpu
    f = f"{PREFIX}.cpu"
    rt_period = str(cpu["realtimePeriod"]) if cpu.get("realtimePeriod") else ""
    rt_runtime = str(cpu["realtimeRuntime"]) if cpu.get("realtimeRuntime") else ""
    if rt_period:
        _write_pair(directory, ("cpu.rt_period_us", rt_period, f"{f}.realtimePeriod"),
                    ("cpu.rt_runtime_us", rt_runtime, f"{f}.realtimeRuntime"))
    elif rt_runtime:
        fs.write(directory, "cpu.rt_runtime_us", rt_runtime, f"{f}.realtimeRuntime")
    shares = cpu.get("shares")
    if shares:
        fs.write(directory, "cpu.shares", str(shares), f"{f}.shares")
        got = fs.read_int(directory, "cpu.shares")
        if shares > got:
            raise OcirtError(f"{f}.shares: the maximum allowed cpu-shares is {got}")
        if shares < got:
            raise OcirtError(f"{f}.shares: the minimum allowed cpu-shares is {got}")
    period = str(cpu["period"]) if cpu.get("period") else ""
    quota = str(cpu["quota"]) if cpu.get("quota") else ""
    if period:
        _write_pair(directory, ("cpu.cfs_period_us", period, f"{f}.period"),
                    ("cpu.cfs_quota_us", quota, f"{f}.quota"))
    elif quota:
        fs.write(directory, "cpu.cfs_quota_us", quota, f"{f}.quota")
    if cpu.get("burst") is not None:
        fs.write(directory, "cpu.cfs_burst_us", str(cpu["burst"]), f"{f}.burst")
    if cpu.get("idle") is not None:
        fs.write(directory, "cpu.idle", str(cpu["idle"]), f"{f}.idle")


def _set_memory(directory: str, res: Resources) -> None:
    m = res.memory
    f = f"{PREFIX}.memory"
    limit = m.get("limit", 0)
    swap = m.get("swap", 0)
    if m.get("checkBeforeUpdate"):
        _check_usage(directory, limit, swap)
    if limit == -1 and swap == 0 and fs.exists(directory, "memory.memsw.limit_in_bytes"):
        swap = -1  # unlimited memory without a swap value: unlimited swap too (runc)
    if limit and swap:
        current = fs.read_int(directory, "memory.limit_in_bytes")
        if swap == -1 or current < swap:  # raising: swap first, so that swap >= limit
            _set_swap(directory, swap)
            _set_limit(directory, limit)
            swap = limit = 0
    _set_limit(directory, limit)
    _set_swap(directory, swap)
    if m.get("reservation"):
        fs.write(directory, "memory.soft_limit_in_bytes", str(m["reservation"]),
                 f"{f}.reservation")
    for key, name in (("kernel", "memory.kmem.limit_in_bytes"),
                      ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        if m.get(key):
            _set_kernel_memory(directory, name, m[key], f"{f}.{key}")
    if m.get("disableOOMKiller"):
        fs.write(directory, "memory.oom_control", "1", f"{f}.disableOOMKiller")
    if m.get("useHierarchy") is not None:
        fs.write(directory, "memory.use_hierarchy", "1" if m["useHierarchy"] else "0",
                 f"{f}.useHierarchy")
    swappiness = m.get("swappiness")
    if swappiness is not None and swappiness != (1 << 64) - 1:  # -1 as uint64: unset
        if swappiness > 100:
            raise OcirtError(f"{f}.swappiness: invalid value {swappiness}, valid memory "
                             "swappiness range is 0-100")
        fs.write(directory, "memory.swappiness", str(swappiness), f"{f}.swappiness")


def _check_usage(directory: str, limit: int, swap: int) -> None:
    try:
        usage = fs.read_int(directory, "memory.usage_in_bytes")
    except OSError:
        return
    for value, what in ((swap, "memory+swap limit"), (limit, "memory limit")):
        if value > 0 and value <= usage:
            raise OcirtError(f"{PREFIX}.memory.checkBeforeUpdate: rejecting {what} {value} "
                             f"<= usage {usage}")


def _set_limit(directory: str, limit: int) -> None:
    if not limit:
        return
    field = f"{PREFIX}.memory.limit"
    path = os.path.join(directory, "memory.limit_in_bytes")
    try:
        fs.write_raw(path, str(limit))
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise fs.write_error(field, path, str(limit), exc) from None
        usage = fs.read_int(directory, "memory.usage_in_bytes")
        peak = fs.read_int(directory, "memory.max_usage_in_bytes")
        raise OcirtError(f"{field}: unable to set memory limit to {limit} (current usage: "
                         f"{usage}, peak usage: {peak})") from None


def _set_swap(directory: str, swap: int) -> None:
    if swap:
        fs.write(directory, "memory.memsw.limit_in_bytes", str(swap), f"{PREFIX}.memory.swap")


def _set_kernel_memory(directory: str, name: str, value: int, field: str) -> None:
    """Kernel memory limits are deprecated (runc ignores them): set them where the
    kernel still takes them, warn where it does not."""
    path = os.path.join(directory, name)
    try:
        fs.write_raw(path, str(value))
        applied = fs.read_int(directory, name)
    except OSError as exc:
        log.warning(f"{field}: not applied ({name}: {errno_text(exc.errno or 0)})")
        return
    if applied != value:
        log.warning(f"{field}: the kernel ignores {name} (kernel memory limits are "
                    "deprecated)")


def _set_blkio(directory: str, res: Resources) -> None:
    b = res.blkio
    f = f"{PREFIX}.blockIO"
    if fs.exists(directory, "blkio.weight"):
        weight_file, device_file = "blkio.weight", "blkio.weight_device"
    else:
        weight_file, device_file = "blkio.bfq.weight", "blkio.bfq.weight_device"
    if b.get("weight"):
        fs.write(directory, weight_file, str(b["weight"]), f"{f}.weight")
    if b.get("leafWeight"):
        fs.write(directory, "blkio.leaf_weight", str(b["leafWeight"]), f"{f}.leafWeight")
    for major, minor, weight, leaf in b.get("weightDevice", []):
        if weight:
            fs.write(directory, device_file, f"{major}:{minor} {weight}", f"{f}.weightDevice")
        if leaf:
            fs.write(directory, "blkio.leaf_weight_device", f"{major}:{minor} {leaf}",
                     f"{f}.weightDevice")
    for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for major, minor, rate in b.get(key, []):
            fs.write(directory, name, f"{major}:{minor} {rate}", f"{f}.{key}")


def _set_rdma(directory: str, res: Resources) -> None:
    for name, limits in res.rdma.items():
        handles = limits.get("hcaHandles")
        objects = limits.get("hcaObjects")
        line = (f"{name} hca_handle={'max' if handles is None else handles} "
                f"hca_object={'max' if objects is None else objects}")
        fs.write(directory, "rdma.max", line, f"{PREFIX}.rdma.{name}")
