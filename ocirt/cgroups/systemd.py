"""`--systemd-cgroup`: the container's cgroup is a transient systemd unit.

cgroupsPath is `slice:prefix:name` (runc's form): the scope `<prefix>-<name>.scope` in
`slice` (default `system.slice`); a name ending in `.slice` makes a slice instead. Where
systemd runs, the unit is created over D-Bus (StartTransientUnit with the container's
first process, Delegate=yes and accounting on, as runc asks, and the resource limits as
unit properties: ocirt.cgroups.sdprops) and its cgroup directories are then managed
through cgroupfs like any other (the limits written there too, as runc does; hierarchies
systemd does not manage are joined by us); `update` sends the changed limits with
SetUnitProperties before writing them; `destroy` stops the unit and resets it if it
failed, so no unit is left either way. Where systemd does not run (no
/run/systemd/system), create fails and says so.
"""

from __future__ import annotations

import os
import posixpath

from ocirt.cgroups import Manager
from ocirt.cgroups.detect import Layout, detect
from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

SYSTEMD_RUNNING = "/run/systemd/system"
SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager"
JOB_TIMEOUT = 30.0


def parse_path(path: str, cid: str) -> tuple[str, str]:
    """(slice, unit name) from `slice:prefix:name` ("" means ocirt-<id>.scope in
    system.slice)."""
    if path == "":
        return "system.slice", f"ocirt-{cid}.scope"
    parts = path.split(":")
    if len(parts) != 3:
        raise OcirtError(f'expected cgroupsPath to be of format "slice:prefix:name" for '
                         f"systemd cgroups, got {path!r} instead")
    slice_, prefix, name = parts
    slice_ = slice_ or "system.slice"
    if not slice_.endswith(".slice") or "/" in slice_:
        raise OcirtError(f"cgroupsPath {path!r}: {slice_!r} is not a slice name")
    if not name or "/" in name or "/" in prefix:
        raise OcirtError(f"cgroupsPath {path!r}: invalid unit name")
    if name.endswith(".slice"):
        return slice_, name
    return slice_, f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def expand_slice(slice_: str) -> str:
    """`a-b-c.slice` lives at /a.slice/a-b.slice/a-b-c.slice (systemd's nesting)."""
    if slice_ == "-.slice":
        return "/"
    stem = slice_.removesuffix(".slice")
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise OcirtError(f"invalid slice name {slice_!r}")
    path = ""
    prefix = ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def unit_cgroup(slice_: str, unit: str) -> str:
    """The unit's cgroup path (absolute in each hierarchy)."""
    if unit.endswith(".slice"):
        return expand_slice(unit)
    return posixpath.join(expand_slice(slice_), unit)


def systemd_running() -> bool:
    return os.path.isdir(SYSTEMD_RUNNING)


def unit_properties(slice_: str, unit: str, pid: int, cid: str) -> list[tuple[str, Any]]:
    props: list[tuple[str, Any]] = [("Description", ("s", f"ocirt container {cid}"))]
    if unit.endswith(".slice"):
        props.append(("Wants", ("s", slice_)))
    else:
        props.append(("Slice", ("s", slice_)))
        props.append(("Delegate", ("b", True)))
    props += [("PIDs", ("au", [pid])), ("MemoryAccounting", ("b", True)),
              ("CPUAccounting", ("b", True)), ("IOAccounting", ("b", True)),
              ("TasksAccounting", ("b", True)), ("DefaultDependencies", ("b", False))]
    return props


class SystemdManager(Manager):
    name = "systemd"

    def __init__(self, slice_: str, unit: str, cid: str, rootless: bool = False,
                 inner: dict[str, Any] | None = None, bus: str | None = None,
                 resources: dict[str, Any] | None = None) -> None:
        self.slice = slice_
        self.unit = unit
        self.cid = cid
        self.rootless = rootless
        self.bus = bus
        self.resources = resources  # sent as properties when the unit starts
        self.default_rules: list = []
        self._inner = None
        if inner is not None:
            from ocirt.cgroups import manager_from_state

            self._inner = manager_from_state(inner)

    @classmethod
    def for_path(cls, cgroups_path: str, cid: str, layout: Layout | None = None,
                 rootless: bool = False, resources: dict[str, Any] | None = None
                 ) -> SystemdManager:
        slice_, unit = parse_path(cgroups_path, cid)
        if not systemd_running():
            raise OcirtError("--systemd-cgroup: systemd is not running on this host (no "
                             f"{SYSTEMD_RUNNING}); run without --systemd-cgroup to use "
                             "the cgroupfs driver")
        if rootless:
            raise OcirtError("--systemd-cgroup: rootless containers need the user's systemd "
                             "instance, which ocirt does not drive (systemdUser)")
        return cls(slice_, unit, cid, rootless, resources=resources)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> SystemdManager:
        return cls(data["slice"], data["unit"], data.get("id", ""),
                   bool(data.get("rootless")), data.get("inner"), data.get("bus"),
                   data.get("resources"))

    def _connect(self) -> Any:
        from ocirt.cgroups.dbus import Connection

        return Connection(self.bus)

    # -- the unit ------------------------------------------------------------------------

    def create(self) -> None:
        pass  # the unit is made in add(), with the container's first process in it

    def add(self, pid: int, skip: tuple[str, ...] = ()) -> None:
        if self._inner is None:
            self._start_unit(pid)
            self._inner = self._cgroupfs(detect())
            self._inner.create()
        self._inner.add(pid)

    def _start_unit(self, pid: int) -> None:
        with self._connect() as bus:
            bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                     "AddMatch", "s", f"type='signal',sender='{SYSTEMD}',"
                     f"interface='{SYSTEMD_MANAGER}',member='JobRemoved'")
            bus.call(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "Subscribe")
            props = unit_properties(self.slice, self.unit, pid, self.cid)
            props += self._resource_properties(self.resources, None, with_devices=True)
            [job] = bus.call(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "StartTransientUnit",
                             "ssa(sv)a(sa(sv))", self.unit, "replace", props, [])
            done = bus.wait_signal("JobRemoved", lambda m: m.body[1] == job, JOB_TIMEOUT)
            result = done.body[3]
            if result != "done":
                raise OcirtError(f"--systemd-cgroup: starting unit {self.unit} failed: "
                                 f"{result}")

    def _resource_properties(self, delta: dict[str, Any] | None,
                             before: dict[str, Any] | None, with_devices: bool) -> list:
        from ocirt.cgroups import resources as res_mod
        from ocirt.cgroups import sdprops

        res = res_mod.parse(delta)
        full = res_mod.parse(res_mod.merge(before, delta or {})) if before else res
        rules = (res.devices or []) + self.default_rules if with_devices else None
        return sdprops.properties(res, full, detect().mode == "unified", rules)

    def _cgroupfs(self, layout: Layout) -> Manager:
        """The unit's directories, managed through cgroupfs (created where systemd did
        not make them: hierarchies it does not manage)."""
        from ocirt.cgroups.factory import cgroupfs_manager

        mgr = cgroupfs_manager(layout, unit_cgroup(self.slice, self.unit), self.cid,
                               self.rootless)
        mgr.default_rules = self.default_rules  # type: ignore[attr-defined]
        mgr.allow_busy = True  # type: ignore[attr-defined]
        return mgr

    def destroy(self) -> None:
        try:
            with self._connect() as bus:
                bus.call(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "StopUnit", "ss", self.unit,
                         "replace")
        except OcirtError as exc:
            if "NoSuchUnit" not in str(exc):
                from ocirt import log

                log.warning(f"--systemd-cgroup: stop unit {self.unit}: {exc}")
        self._reset_failed()
        if self._inner is not None:
            self._inner.destroy()

    # -- everything else: the unit's cgroup -----------------------------------------------

    def _cg(self) -> Manager:
        return self._inner if self._inner is not None else Manager()

    def apply(self, resources: dict[str, Any] | None) -> None:
        self._cg().apply(resources)

    def update(self, resources: dict[str, Any]) -> None:
        """SetUnitProperties first (runtime only, as runc), then the files."""
        inner = self._cg()
        props = self._resource_properties(resources, getattr(inner, "resources_raw", None),
                                          with_devices=False)
        if props:
            with self._connect() as bus:
                bus.call(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "SetUnitProperties",
                         "sba(sv)", self.unit, True, props)
        inner.update(resources)

    def _reset_failed(self) -> None:
        """A unit whose processes were killed may stay loaded as failed: forget it."""
        try:
            with self._connect() as bus:
                bus.call(SYSTEMD, SYSTEMD_PATH, SYSTEMD_MANAGER, "ResetFailedUnit", "s",
                         self.unit)
        except OcirtError:
            pass  # not failed, or gone: nothing is left

    def state(self) -> dict[str, Any]:
        return {"manager": self.name, "slice": self.slice, "unit": self.unit, "id": self.cid,
                "rootless": self.rootless, "bus": self.bus, "resources": self.resources,
                "inner": self._inner.state() if self._inner is not None else None}

    def is_frozen(self) -> bool:
        return self._cg().is_frozen()

    def freeze(self) -> None:
        self._cg().freeze()

    def thaw(self) -> None:
        self._cg().thaw()

    def pids(self) -> list[int]:
        return self._cg().pids()

    def stats(self) -> dict[str, Any]:
        return self._cg().stats()

    def paths(self) -> dict[str, str]:
        return self._cg().paths()
