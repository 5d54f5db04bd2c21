"""The container operations that work through its cgroup: pause, resume, update and the
process list behind `ps` (library API; the CLI only parses flags).

They live in `runtime`, not `cgroups`: they read and write the container's state
(`ocirt.state`) and call `ocirt.runtime.kill`, while `ocirt.cgroups` stays a driver that
knows nothing of containers. Each takes the container's lock where it changes
something, checks the states it may start from (ocirt.state.ALLOWED) and works through
`manager_from_state`.
"""

from __future__ import annotations

from ocirt.cgroups import Manager, manager_from_state
from ocirt.errors import OcirtError
from ocirt.state import Container, Store, check_transition

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any


def cgroup_manager(container: Container, what: str) -> Manager:
    """The cgroup driver recorded at create, or an error saying `what` cannot be done."""
    data = container.data.get("cgroup")
    if not data:
        raise OcirtError(f"cannot {what}: the container has no cgroup (cgroups were skipped "
                         "when it was created)")
    return manager_from_state(data)


def pause(store: Store, cid: str) -> None:
    with store.lock(cid):
        container = store.load(cid)
        check_transition("pause", container.status(), cid)
        cgroup_manager(container, "pause").freeze()


def resume(store: Store, cid: str) -> None:
    with store.lock(cid):
        container = store.load(cid)
        check_transition("resume", container.status(), cid)
        cgroup_manager(container, "resume").thaw()


def update(store: Store, cid: str, resources: dict[str, Any]) -> None:
    """Apply a LinuxResources delta to the live cgroup and record the merged result."""
    with store.lock(cid):
        container = store.load(cid)
        check_transition("update", container.status(), cid)
        manager = cgroup_manager(container, "update")
        manager.update(resources)
        container.data["cgroup"] = manager.state()
        store.save(container)


def intel_rdt_for_update(l3_cache: str, mem_bw: str) -> str:
    """The resctrl mount point for `update --l3-cache-schema/--mem-bw-schema`, checked
    before anything is updated, with runc's errors when CAT or MBA is missing."""
    from ocirt import resctrl

    try:
        root = resctrl.find_root()
    except OcirtError:
        root = ""
    if l3_cache and not (root and resctrl.has_cat(root)):
        raise OcirtError("Intel RDT/CAT: l3 cache schema is not enabled")
    if mem_bw and not (root and resctrl.has_mba(root)):
        raise OcirtError("Intel RDT/MBA: memory bandwidth schema is not enabled")
    for flag, line, prefix in (("--l3-cache-schema", l3_cache, "L3"),
                               ("--mem-bw-schema", mem_bw, "MB:")):
        if "\n" in line or (line and not line.startswith(prefix)):
            raise OcirtError(f"update {flag}: {line!r} must be one line starting with "
                             f"{prefix!r}")
    return root


def update_intel_rdt(store: Store, cid: str, root: str, l3_cache: str, mem_bw: str) -> None:
    """As runc: the lines are written to the container's resctrl group (the config's
    `schemata` after them), which is made now, named after the container, when its
    config had no linux.intelRdt."""
    from ocirt import resctrl
    from ocirt.spec.plan import IntelRdt

    with store.lock(cid):
        container = store.load(cid)
        check_transition("update", container.status(), cid)
        rec = container.data.get("intel_rdt")
        if not rec:
            rdt = IntelRdt()
            rec = resctrl.record(rdt, root, cid)
            container.data["intel_rdt"] = rec
            store.save(container)
            resctrl.apply(rdt, rec, container.pid)
        conf = (container.config().get("linux") or {}).get("intelRdt") or {}
        lines = [line for line in (l3_cache, mem_bw) if line] + list(conf.get("schemata") or [])
        resctrl.write_schemata(rec, lines)


def processes(store: Store, cid: str) -> list[int]:
    """Host PIDs of every process of the container (`ps`)."""
    from ocirt.runtime.kill import container_pids

    container = store.load(cid)
    check_transition("ps", container.status(), cid)
    return container_pids(container)
