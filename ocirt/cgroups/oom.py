"""Watching a cgroup for OOM kills (v1 eventfd on memory.oom_control, v2 inotify on
memory.events), confirmed by the kernel's `oom_kill` counter."""

from __future__ import annotations

import os
import time

from ocirt.cgroups.base import Manager

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from collections.abc import Iterator


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


def oom_kills(manager: Manager) -> int:
    """How many processes the OOM killer has killed in the container's memory cgroup."""
    directory, counter = _memory_dir(manager)
    if directory is None:
        return 0
    from ocirt.cgroups import fs

    try:
        return fs.read_keyed(directory, counter).get("oom_kill", 0)
    except OSError:
        return 0


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
