"""The cgroup v2 manager: one directory in the unified hierarchy.

Resources use the v2 files with runc's conversions from the v1-shaped spec (shares ->
cpu.weight, blkio weight -> io.weight, memory+swap -> memory.swap.max, ...); the
`unified` map is written as given. Device rules become an eBPF program attached to the
cgroup (`ocirt.cgroups.bpf`). Freezing uses cgroup.freeze and waits for cgroup.events
to report `frozen 1`.

Controllers are enabled (cgroup.subtree_control) in the directories we made, and in each
existing ancestor, from the top of the hierarchy down, only for the controllers a
requested resource needs and the ancestor does not enable yet: a v2 cgroup has a
controller's files only when every ancestor passes it down. What we enabled in a cgroup
we did not make is recorded and disabled again on delete, unless another cgroup has
appeared below it meanwhile (it may rely on it). A controller that cannot be passed down
(not available, or the ancestor holds processes: the kernel's no-internal-process rule)
fails create with the field, the cgroup and the reason; settings v2 has no file for are
reported, not silently dropped.
"""

from __future__ import annotations

import errno
import math
import os
import time

from ocirt import log
from ocirt.cgroups import fs, v2_frozen
from ocirt.cgroups.base import PREFIX, FsManager
from ocirt.cgroups.resources import pids_max
from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms on the `state` path
if TYPE_CHECKING:
    from typing import Any

    from ocirt.cgroups.resources import Resources

FREEZE_WAIT = 5.0


class V2Manager(FsManager):
    name = "v2"

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path
        self._skipped = False
        self.enabled: list[list[str]] = []  # [cgroup, controller] we enabled, not ours

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> V2Manager:
        mgr = cls(data.get("path") or "", rootless=bool(data.get("rootless")),
                  explicit=bool(data.get("explicit")), made=data.get("made"),
                  resources=data.get("resources"))
        mgr._skipped = not data.get("path")
        mgr.enabled = [list(pair) for pair in data.get("enabled") or []]
        return mgr

    def paths(self) -> dict[str, str]:
        return {} if self._skipped else {"": self.path}

    def dirs(self) -> list[str]:
        return [] if self._skipped else [self.path]

    def _drop(self, directory: str) -> None:
        self._skipped = True

    def _extra_state(self) -> dict[str, Any]:
        return {"path": "" if self._skipped else self.path, "enabled": self.enabled}

    def destroy(self) -> None:
        super().destroy()
        self._undo_enabled()

    def _undo_enabled(self) -> None:
        """Disable, deepest first, what we enabled in cgroups we did not make, where no
        cgroup is left below them (another container's would lose its controller)."""
        for directory, controller in reversed(list(self.enabled)):
            if not _has_children(directory):
                try:
                    fs.write_raw(os.path.join(directory, "cgroup.subtree_control"),
                                 f"-{controller}")
                except OSError as exc:
                    log.debug(f"cannot disable {controller} in {directory}: {exc.strerror}")
            else:
                log.debug(f"{controller} stays enabled in {directory}: it has other cgroups")
            self.enabled.remove([directory, controller])

    def _prepare(self, made: list[str]) -> None:
        for directory in made[:-1] if made and made[-1] == self.path else made:
            enable_controllers(directory, None)

    # -- resources -----------------------------------------------------------------------

    def _set(self, res: Resources, full: Resources, devices: bool) -> None:
        if self._skipped:
            if res.limits_requested():
                raise self._missing(_first_section(res), "cgroup v2")
            return
        self._enable_needed(res)
        d = self.path
        if res.pids_limit is not None:
            limit = pids_max(res.pids_limit)
            fs.write(d, "pids.max", limit, f"{PREFIX}.pids.limit")
        if res.memory:
            set_memory(d, res, full)
        if res.blkio:
            set_io(d, res)
        if res.cpu:
            set_cpu(d, res, full)
        if devices:
            self._set_devices(res)
        if res.cpu.get("cpus") or res.cpu.get("mems"):
            for key in ("cpus", "mems"):
                if res.cpu.get(key):
                    fs.write(d, f"cpuset.{key}", res.cpu[key], f"{PREFIX}.cpu.{key}")
        if res.hugepages:
            set_hugetlb(d, res)
        for name, limits in res.rdma.items():
            handles = limits.get("hcaHandles")
            objects = limits.get("hcaObjects")
            fs.write(d, "rdma.max", f"{name} hca_handle={'max' if handles is None else handles}"
                     f" hca_object={'max' if objects is None else objects}",
                     f"{PREFIX}.rdma.{name}")
        _warn_v1_only(res)
        self._set_unified(res)

    def _enable_needed(self, res: Resources) -> None:
        """Pass the controllers the request needs down every ancestor, top first; only
        what is missing is touched, and what we touched in a cgroup not ours recorded."""
        needed = _controllers_for(res)
        if not needed:
            return
        for directory in _ancestors(self.path):
            try:
                enabled = set(fs.read(directory, "cgroup.subtree_control").split())
            except OSError:
                continue
            for controller in sorted(set(needed) - enabled):
                _enable_one(directory, controller, needed[controller])
                if directory not in self.made:
                    self.enabled.append([directory, controller])

    def _set_devices(self, res: Resources) -> None:
        from ocirt.cgroups import bpf
        from ocirt.cgroups import devices as dev
        from ocirt.linux.proc import in_user_namespace

        state = dev.emulate((res.devices or []) + self.default_rules)
        if self.rootless or in_user_namespace():
            return
        try:
            bpf.attach(self.path, bpf.compile_state(state))
        except OSError as exc:
            raise OcirtError(f"{PREFIX}.devices: attach the device filter to {self.path}: "
                             f"{exc.strerror}") from None

    def _set_unified(self, res: Resources) -> None:
        """Each key is a file of the container's cgroup; a value with newlines is
        written line by line (runc)."""
        for key, value in res.unified.items():
            field = f"{PREFIX}.unified.{key}"
            path = os.path.join(self.path, key)
            try:
                for line in [part for part in value.split("\n") if part] or [value]:
                    fs.write_raw(path, line)
            except OSError as exc:
                controller = key.partition(".")[0]
                if (not os.path.exists(path) and controller != "cgroup"
                        and controller not in available(self.path)):
                    raise OcirtError(f"{field}: controller {controller!r} not available") \
                        from None
                raise fs.write_error(field, path, value, exc) from None

    # -- freezer, kill -------------------------------------------------------------------

    def is_frozen(self) -> bool:
        return not self._skipped and v2_frozen(self.path)

    def freeze(self) -> None:
        if self._skipped:
            raise OcirtError("cannot freeze: the container has no cgroup")
        set_frozen(self.path, True)

    def thaw(self) -> None:
        if not self._skipped and os.path.isdir(self.path):
            set_frozen(self.path, False)

    def kill_all(self) -> bool:
        """SIGKILL every process at once through cgroup.kill (False where missing)."""
        if self._skipped or not fs.exists(self.path, "cgroup.kill"):
            return False
        fs.write(self.path, "cgroup.kill", "1", "cgroup.kill")
        return True

    def stats(self) -> dict[str, Any]:
        from ocirt.cgroups.stats import v2_stats

        return {} if self._skipped else v2_stats(self.path)


# --- helpers (also used by the v1 manager on hybrid hosts) --------------------------------

def _ancestors(path: str) -> list[str]:
    """The cgroups above `path`, from the top of its mount down to its parent."""
    found = []
    directory = os.path.dirname(path)
    while fs.exists(directory, "cgroup.controllers"):
        found.append(directory)
        if os.path.ismount(directory) or directory == "/":
            break
        directory = os.path.dirname(directory)
    return found[::-1]


def _enable_one(directory: str, controller: str, field: str) -> None:
    """+controller in directory's cgroup.subtree_control, or an error saying why not."""
    if controller not in available(directory):
        raise OcirtError(f"{PREFIX}.{field}: controller {controller!r} not available in "
                         f"{directory} (cgroup.controllers)")
    where = f"{PREFIX}.{field}: cannot pass the {controller} controller down from {directory}"
    try:
        fs.write_raw(os.path.join(directory, "cgroup.subtree_control"), f"+{controller}")
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise OcirtError(f"{where}: that cgroup holds processes (cgroup v2 has "
                             "controllers only below cgroups without processes)") from None
        raise OcirtError(f"{where}: {exc.strerror}") from None


def _has_children(directory: str) -> bool:
    try:
        return any(entry.is_dir() for entry in os.scandir(directory))
    except OSError:
        return False



def available(directory: str) -> set[str]:
    try:
        return set(fs.read(directory, "cgroup.controllers").split())
    except OSError:
        return set()


def enable_controllers(directory: str, wanted: set[str] | None) -> None:
    """Enable `wanted` (None: every available one) for the children of `directory`;
    controllers the kernel refuses are left for the setters to report."""
    try:
        enabled = set(fs.read(directory, "cgroup.subtree_control").split())
    except OSError:
        return
    todo = (available(directory) if wanted is None else wanted & available(directory)) - enabled
    for controller in sorted(todo):
        try:
            fs.write_raw(os.path.join(directory, "cgroup.subtree_control"), f"+{controller}")
        except OSError as exc:
            log.debug(f"cannot enable {controller} in {directory}: {exc.strerror}")


def set_frozen(directory: str, frozen: bool) -> None:
    """cgroup.freeze, then wait until cgroup.events says the state was reached."""
    want = "1" if frozen else "0"
    fs.write(directory, "cgroup.freeze", want, "cgroup.freeze")
    deadline = time.monotonic() + FREEZE_WAIT
    while True:
        try:
            events = fs.read_keyed(directory, "cgroup.events")
        except OSError:
            return
        if str(events.get("frozen", want)) == want:
            return
        if time.monotonic() > deadline:
            if frozen:
                fs.write(directory, "cgroup.freeze", "0", "cgroup.freeze")
            raise OcirtError(f"unable to {'freeze' if frozen else 'thaw'} {directory}")
        time.sleep(0.005)


def shares_to_weight(shares: int) -> int:
    """runc's conversion of cpu.shares [2, 262144] into cpu.weight [1, 10000]: a
    quadratic in log2 that maps 2 -> 1, 1024 -> 100 and 262144 -> 10000."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    return math.ceil(10 ** ((lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0))


def blkio_weight_to_io(weight: int) -> int:
    """[10, 1000] -> [1, 10000], linearly (runc)."""
    return 0 if weight == 0 else 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int, limit: int) -> int:
    """The spec's memory+swap as v2's swap-only value (runc's rules); -1 = max."""
    if limit == -1 and swap == 0:
        return -1
    if swap in (-1, 0) or limit == -1:
        return swap
    field = f"{PREFIX}.memory.swap"
    if limit == 0:
        raise OcirtError(f"{field}: unable to set swap limit without memory limit")
    if limit < 0:
        raise OcirtError(f"{PREFIX}.memory.limit: invalid memory value {limit}")
    if swap < limit:
        raise OcirtError(f"{field}: memory+swap limit should be >= memory limit")
    return swap - limit


def _num(value: int) -> str:
    return "max" if value == -1 else str(value)


def set_memory(d: str, res: Resources, full: Resources) -> None:
    m = res.memory
    f = f"{PREFIX}.memory"
    limit = m.get("limit", 0)
    swap = m.get("swap", 0)
    if not (limit or swap or m.get("reservation")):
        _warn_memory_v1(m)
        return
    if m.get("checkBeforeUpdate"):
        _check_usage(d, limit, swap)
    v2swap = swap_to_v2(swap, limit or (full.memory.get("limit", 0) if swap else 0))
    if v2swap or (swap > 0 and v2swap == 0):
        try:
            fs.write_raw(os.path.join(d, "memory.swap.max"), _num(v2swap))
        except FileNotFoundError:
            if v2swap not in (-1, 0):
                raise OcirtError(f"{f}.swap: {d}/memory.swap.max does not exist (no swap "
                                 "accounting)") from None
        except OSError as exc:
            raise fs.write_error(f"{f}.swap", f"{d}/memory.swap.max", _num(v2swap),
                                 exc) from None
    if limit:
        fs.write(d, "memory.max", _num(limit), f"{f}.limit")
    if m.get("reservation"):
        fs.write(d, "memory.low", _num(m["reservation"]), f"{f}.reservation")
    _warn_memory_v1(m)


def _check_usage(d: str, limit: int, swap: int) -> None:
    try:
        usage = fs.read_int(d, "memory.current")
    except (OSError, ValueError):
        return
    for value, what in ((swap, "memory+swap limit"), (limit, "memory limit")):
        if value > 0 and value <= usage:
            raise OcirtError(f"{PREFIX}.memory.checkBeforeUpdate: rejecting {what} {value} "
                             f"<= usage {usage}")


def _warn_memory_v1(m: dict[str, Any]) -> None:
    for key in ("kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy"):
        if m.get(key) not in (None, False) and not (key == "swappiness"
                                                    and m[key] == (1 << 64) - 1):
            log.warning(f"{PREFIX}.memory.{key}: not supported on cgroup v2, ignored")


def set_cpu(d: str, res: Resources, full: Resources) -> None:
    cpu = res.cpu
    f = f"{PREFIX}.cpu"
    if cpu.get("idle") is not None:
        fs.write(d, "cpu.idle", str(cpu["idle"]), f"{f}.idle")
    if cpu.get("shares"):
        fs.write(d, "cpu.weight", str(shares_to_weight(cpu["shares"])), f"{f}.shares")
    burst = cpu.get("burst")
    burst_done = True
    if burst is not None:  # may need the new cpu.max first: then retried after it
        burst_done = _try_write(d, "cpu.max.burst", str(burst))
    if cpu.get("quota") or cpu.get("period"):
        quota = cpu.get("quota") or full.cpu.get("quota") or 0
        period = cpu.get("period") or full.cpu.get("period") or 100000
        value = f"{quota if quota > 0 else 'max'} {period}"
        fs.write(d, "cpu.max", value, f"{f}.quota" if cpu.get("quota") else f"{f}.period")
    if not burst_done:
        fs.write(d, "cpu.max.burst", str(burst), f"{f}.burst")
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            raise OcirtError(f"{f}.{key}: realtime scheduling limits are not supported on "
                             "cgroup v2")


def _try_write(d: str, name: str, value: str) -> bool:
    try:
        fs.write_raw(os.path.join(d, name), value)
        return True
    except OSError:
        return False


def set_io(d: str, res: Resources) -> None:
    b = res.blkio
    f = f"{PREFIX}.blockIO"
    bfq = fs.exists(d, "io.bfq.weight")
    if b.get("weight"):
        if bfq:
            fs.write(d, "io.bfq.weight", str(b["weight"]), f"{f}.weight")
        else:
            fs.write(d, "io.weight", str(blkio_weight_to_io(b["weight"])), f"{f}.weight")
    for major, minor, weight, _ in b.get("weightDevice", []):
        if weight:
            name = "io.bfq.weight" if bfq else "io.weight"
            value = weight if bfq else blkio_weight_to_io(weight)
            fs.write(d, name, f"{major}:{minor} {value}", f"{f}.weightDevice")
    for key, op in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                    ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for major, minor, rate in b.get(key, []):
            fs.write(d, "io.max", f"{major}:{minor} {op}={rate if rate else 'max'}",
                     f"{f}.{key}")
    if b.get("leafWeight") or any(leaf for *_, leaf in b.get("weightDevice", [])):
        log.warning(f"{f}.leafWeight: not supported on cgroup v2, ignored")


def set_hugetlb(d: str, res: Resources) -> None:
    rsvd = True
    for size, limit in res.hugepages:
        field = f"{PREFIX}.hugepageLimits[{size}]"
        fs.write(d, f"hugetlb.{size}.max", str(limit), field)
        if rsvd:
            if fs.exists(d, f"hugetlb.{size}.rsvd.max"):
                fs.write(d, f"hugetlb.{size}.rsvd.max", str(limit), field)
            else:
                rsvd = False


def _warn_v1_only(res: Resources) -> None:
    if res.network:
        log.warning(f"{PREFIX}.network: net_cls/net_prio do not exist on cgroup v2, ignored")


def _controllers_for(res: Resources) -> dict[str, str]:
    """controller -> the field that needs it (for errors)."""
    needed: dict[str, str] = {}
    for key in res.unified:
        controller = key.partition(".")[0]
        if controller != "cgroup":
            needed[controller] = f"unified.{key}"
    if res.memory:
        needed["memory"] = "memory"
    if any(k in res.cpu for k in ("shares", "quota", "period", "burst", "idle")):
        needed["cpu"] = "cpu"
    if res.cpu.get("cpus") or res.cpu.get("mems"):
        needed["cpuset"] = "cpu.cpus" if res.cpu.get("cpus") else "cpu.mems"
    if res.pids_limit is not None:
        needed["pids"] = "pids.limit"
    if res.blkio:
        needed["io"] = "blockIO"
    if res.hugepages:
        needed["hugetlb"] = "hugepageLimits"
    if res.rdma:
        needed["rdma"] = "rdma"
    return needed


def _first_section(res: Resources) -> str:
    for section in ("memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma",
                    "unified"):
        if res.wants(section):
            return section
    return "devices"
