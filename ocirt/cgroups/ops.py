"""The container operations that work through the cgroup: pause, resume, update,
events and the process list behind `ps` (library API; the CLI only parses flags).

Each one takes the container's lock where it changes something, checks the states it
may start from (ocirt.state.ALLOWED) and works through `manager_from_state`.
"""

from __future__ import annotations

import os
import time

from ocirt.cgroups import Manager, manager_from_state
from ocirt.errors import OcirtError
from ocirt.state import STOPPED, Container, Store, check_transition

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any


def _manager(container: Container, what: str) -> Manager:
    data = container.data.get("cgroup")
    if not data:
        raise OcirtError(f"cannot {what}: the container has no cgroup (cgroups were skipped "
                         "when it was created)")
    return manager_from_state(data)


def pause(store: Store, cid: str) -> None:
    with store.lock(cid):
        container = store.load(cid)
        check_transition("pause", container.status(), cid)
        _manager(container, "pause").freeze()


def resume(store: Store, cid: str) -> None:
    with store.lock(cid):
        container = store.load(cid)
        check_transition("resume", container.status(), cid)
        _manager(container, "resume").thaw()


def update(store: Store, cid: str, resources: dict[str, Any]) -> None:
    """Apply a LinuxResources delta to the live cgroup and record the merged result."""
    with store.lock(cid):
        container = store.load(cid)
        check_transition("update", container.status(), cid)
        manager = _manager(container, "update")
        manager.update(resources)
        container.data["cgroup"] = manager.state()
        store.save(container)


def processes(store: Store, cid: str) -> list[int]:
    """Host PIDs of every process of the container (`ps`)."""
    from ocirt.runtime.kill import container_pids

    container = store.load(cid)
    check_transition("ps", container.status(), cid)
    return container_pids(container)


# --- events ------------------------------------------------------------------------------

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
    manager = _manager(container, "read events")
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


class OOMWatch:
    """OOM kills in the container's memory cgroup: woken by the kernel (v1: an eventfd
    registered on memory.oom_control; v2: inotify on memory.events) and confirmed by the
    `oom_kill` counter, which also catches kills the notification missed."""

    def __init__(self, manager: Manager) -> None:
        self.dir, self.counter_file = _memory_dir(manager)
        self.fd = -1
        self.count = 0
        self.count = self._count()

    def __enter__(self) -> OOMWatch:
        if self.dir is not None:
            try:
                self.fd = _v1_eventfd(self.dir) if self.counter_file == "memory.oom_control" \
                    else _v2_inotify(self.dir)
            except OSError:
                self.fd = -1  # counter polling alone still works
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _count(self) -> int:
        if self.dir is None:
            return 0
        from ocirt.cgroups import fs

        try:
            return fs.read_keyed(self.dir, self.counter_file).get("oom_kill", 0)
        except OSError:
            return self.count  # the cgroup is gone: nothing new

    def wait(self, timeout: float) -> Iterator[None]:
        """Sleep up to `timeout` seconds; yield once per OOM kill seen meanwhile."""
        import select

        if self.fd >= 0:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if ready:
                try:
                    os.read(self.fd, 4096)
                except OSError:
                    pass
        else:
            time.sleep(timeout)
        now = self._count()
        for _ in range(max(0, now - self.count)):
            yield None
        self.count = max(self.count, now)


def _memory_dir(manager: Manager) -> tuple[str | None, str]:
    paths = manager.paths()
    if "memory" in paths:
        return paths["memory"], "memory.oom_control"
    if manager.name == "v2" and "" in paths:
        return paths[""], "memory.events"
    return None, ""


def _v1_eventfd(directory: str) -> int:
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        control = os.open(os.path.join(directory, "memory.oom_control"),
                          os.O_RDONLY | os.O_CLOEXEC)
        try:
            from ocirt.cgroups import fs

            fs.write_raw(os.path.join(directory, "cgroup.event_control"), f"{efd} {control}")
        finally:
            os.close(control)
    except OSError:
        os.close(efd)
        raise
    return efd


def _v2_inotify(directory: str) -> int:
    from ocirt.linux import libc

    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        libc.inotify_add_watch(fd, os.path.join(directory, "memory.events"), 0x2)  # IN_MODIFY
    except OSError:
        os.close(fd)
        raise
    return fd


# --- ps ------------------------------------------------------------------------------------

def ps_table(pids: list[int], ps_args: list[str]) -> str:
    """runc's table: `ps ARGS` (default -ef), its header, and the lines whose PID column
    names a process of the container."""
    import subprocess

    try:
        result = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True,
                                text=True)
    except FileNotFoundError:
        raise OcirtError("ps: executable file not found in $PATH") from None
    if result.returncode != 0:
        raise OcirtError(f"ps: exit status {result.returncode}: "
                         f"{(result.stdout + result.stderr).strip()}")
    lines = result.stdout.split("\n")
    header = lines[0]
    try:
        column = header.split().index("PID")
    except ValueError:
        raise OcirtError("couldn't find PID field in ps output") from None
    wanted = set(pids)
    out = [header]
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[column])
        except (ValueError, IndexError):
            raise OcirtError(f"unable to parse pid: {line!r}") from None
        if pid in wanted:
            out.append(line)
    return "\n".join(out) + "\n"
