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


def processes(store: Store, cid: str) -> list[int]:
    """Host PIDs of every process of the container (`ps`)."""
    from ocirt.runtime.kill import container_pids

    container = store.load(cid)
    check_transition("ps", container.status(), cid)
    return container_pids(container)
