"""`--systemd-cgroup`: the container's cgroup is a transient systemd scope.

cgroupsPath is `slice:prefix:name` (runc's form): the scope `<prefix>-<name>.scope` in
`slice` (default `system.slice`); a name ending in `.slice` makes a slice instead. Where
systemd runs, the scope is created over D-Bus (StartTransientUnit with the container's
first process and Delegate=yes) and its cgroup is then managed like any other through
cgroupfs; where it does not (no /run/systemd/system), create fails and says so.
"""

from __future__ import annotations

import os
from typing import Any

from ocirt.cgroups import Manager
from ocirt.cgroups.detect import Layout
from ocirt.errors import OcirtError

SYSTEMD_RUNNING = "/run/systemd/system"


def parse_path(path: str, cid: str) -> tuple[str, str]:
    """(slice, unit name) from `slice:prefix:name`."""
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
    if stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise OcirtError(f"invalid slice name {slice_!r}")
    path = ""
    prefix = ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def systemd_running() -> bool:
    return os.path.isdir(SYSTEMD_RUNNING)


class SystemdManager(Manager):
    name = "systemd"

    @classmethod
    def for_path(cls, cgroups_path: str, cid: str, layout: Layout, rootless: bool
                 ) -> Manager:
        slice_, unit = parse_path(cgroups_path, cid)
        if not systemd_running():
            raise OcirtError("--systemd-cgroup: systemd is not running on this host (no "
                             f"{SYSTEMD_RUNNING}); run without --systemd-cgroup to use "
                             "the cgroupfs driver")
        raise OcirtError("--systemd-cgroup: not supported yet")

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Manager:
        return Manager()
