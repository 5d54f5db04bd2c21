"""Cgroup management behind one interface (v1, v2 and hybrid hosts).

The runtime talks to cgroups only through `Manager`:

    mgr = manager_for_plan(plan, container_id, systemd=..., rootless=...)
    mgr.create()            # make the container's cgroup(s); undo with destroy()
    mgr.add(pid)            # place a process (the init, before it runs user code)
    mgr.apply(resources)    # linux.resources (runtime-spec); raise OcirtError naming the field
    mgr.state()             # JSON-able description kept in state.json ("cgroup")
    manager_from_state(d)   # the same manager again, for later commands

This first version places nothing and applies nothing: the foundation accepts
`cgroupsPath` and `resources` without acting on them (the cgroup work lands separately).
"""

from __future__ import annotations

from typing import Any


class Manager:
    """The no-op manager: the container stays in the caller's cgroups."""

    def create(self) -> None:
        pass

    def add(self, pid: int) -> None:
        pass

    def apply(self, resources: dict[str, Any] | None) -> None:
        pass

    def state(self) -> dict[str, Any] | None:
        return None

    def is_frozen(self) -> bool:
        return False

    def freeze(self) -> None:
        pass

    def thaw(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def destroy(self) -> None:
        pass


def manager_for_plan(plan: Any, container_id: str, *, systemd: bool = False,
                     rootless: bool = False) -> Manager:
    return Manager()


def manager_from_state(data: dict[str, Any] | None) -> Manager:
    return Manager()
