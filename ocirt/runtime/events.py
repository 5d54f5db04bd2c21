"""runc's `events`: stats of the container's cgroup, once or every interval, and an
`oom` event for each OOM kill, until the container stops."""

from __future__ import annotations

import time

from ocirt.cgroups import Manager
from ocirt.cgroups.oom import OOMWatch
from ocirt.errors import OcirtError
from ocirt.runtime.control import cgroup_manager
from ocirt.state import STOPPED, Store

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def stats_event(cid: str, manager: Manager) -> dict[str, Any]:
    return {"type": "stats", "id": cid, "data": manager.stats()}


def events(store: Store, cid: str, interval: float, stats_only: bool,
           emit: Callable[[dict[str, Any]], None]) -> None:
    """runc's `events`: with `stats_only` one stats event; otherwise a stats event every
    `interval` seconds and an `oom` event whenever the kernel OOM-kills in the container,
    until the container stops."""
    container = store.load(cid)
    if container.status() == STOPPED:
        raise OcirtError(f"container with id {cid} is not running")
    manager = cgroup_manager(container, "read events")
    if stats_only:
        emit(stats_event(cid, manager))
        return
    with OOMWatch(manager) as oom:
        next_stats = time.monotonic() + interval
        while True:
            timeout = max(0.0, next_stats - time.monotonic())
            for _ in oom.wait(min(timeout, 1.0)):
                emit({"type": "oom", "id": cid})
            if not _alive(store, cid):
                return
            if time.monotonic() >= next_stats:
                emit(stats_event(cid, manager))
                next_stats += interval


def _alive(store: Store, cid: str) -> bool:
    try:
        return store.load(cid).status() != STOPPED
    except OcirtError:
        return False
