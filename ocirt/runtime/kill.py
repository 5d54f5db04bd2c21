"""`kill`: signal the container's init (or, with --all, every process of the container).

Signals go through a pidfd opened after checking the init's start time, so a recycled
PID can never receive a signal meant for a container that has exited.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import proc
from ocirt.state import STOPPED, Container, Store, check_transition


def kill(store: Store, cid: str, sig: int, all_processes: bool = False) -> None:
    container = store.load(cid)
    status = container.status()
    if all_processes:
        if status != STOPPED:
            signal_all(container, sig)
        return
    check_transition("kill", status, cid)
    signal_init(container, sig)


def signal_init(container: Container, sig: int) -> None:
    pid = container.pid
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise OcirtError("container not running") from None
    try:
        if proc.start_time(pid) != container.data.get("init_start"):
            raise OcirtError("container not running")
        from ocirt.linux.signals import pidfd_send_signal

        try:
            pidfd_send_signal(pidfd, sig)
        except OSError as exc:
            raise OcirtError(f"unable to signal init: {errno_text(exc.errno or 0)}") from None
    finally:
        os.close(pidfd)


def container_pids(container: Container) -> list[int]:
    """Every live process of the container: the members of its cgroup, and, when it has
    a pid namespace of its own, every process in that namespace."""
    pids: set[int] = set()
    cg = container.data.get("cgroup")
    if cg:
        from ocirt.cgroups import manager_from_state

        pids.update(manager_from_state(cg).pids())
    if container.init_alive():
        pids.add(container.pid)
        if (container.data.get("namespaces") or {}).get("pid") == "":
            link = proc.ns_inode(container.pid, "pid")
            # never our own: an init that is not in a namespace of its own (a restore
            # that went wrong) must not make every process on the host the container's
            if link and link != proc.ns_inode("self", "pid"):
                pids.update(proc.pids_in_pid_namespace(link))
    return sorted(pids)


def signal_all(container: Container, sig: int) -> None:
    """runc's --all: every process, the cgroup frozen meanwhile so none can fork away."""
    cg = container.data.get("cgroup")
    manager = None
    if cg:
        from ocirt.cgroups import manager_from_state

        manager = manager_from_state(cg)
        manager.freeze()
    try:
        for pid in container_pids(container):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    finally:
        if manager is not None:
            manager.thaw()
