"""`ocirt features`: the runtime-spec features document, built from the same tables the
conversion uses, and from what each subsystem module says it supports."""

from __future__ import annotations

from ocirt import OCI_VERSION, __version__
from ocirt.linux import consts
from ocirt.spec import options as opt

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    mount_options = sorted(set(opt.MOUNT_FLAGS) | set(opt.PROPAGATION)
                           | set(opt.RECURSIVE_ATTRS) | set(opt.EXTENSIONS))
    linux: dict[str, Any] = {
        "namespaces": sorted(consts.NAMESPACES),
        "capabilities": list(opt.CAPABILITIES),
        "cgroup": _module_features("ocirt.cgroups", {"v1": False, "v2": False,
                                                     "systemd": False, "systemdUser": False,
                                                     "rdma": False}),
        "seccomp": _module_features("ocirt.seccomp", {"enabled": False}),
        "apparmor": {"enabled": True},
        "selinux": {"enabled": True},
        # What the config can ask for, whatever this host has (ocirt.resctrl says then).
        "intelRdt": {"enabled": True, "schemata": True, "monitoring": True},
        "memoryPolicy": {"modes": sorted(opt.MEMORY_POLICY_MODES),
                         "flags": sorted(opt.MEMORY_POLICY_FLAGS)},
        "mountExtensions": {"idmap": {"enabled": True}},
        "netDevices": {"enabled": True},
    }
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(opt.HOOKS),
        "mountOptions": mount_options,
        "linux": linux,
        "annotations": {"org.opencontainers.runtime.ocirt.version": __version__},
    }


def _module_features(module: str, default: dict[str, Any]) -> dict[str, Any]:
    """A subsystem module may define FEATURES; without it we claim nothing."""
    return dict(getattr(__import__(module, fromlist=["FEATURES"]), "FEATURES", default))
