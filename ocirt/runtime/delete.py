"""`delete`: remove everything the container had, then run the poststop hooks.

Without --force only a created or stopped container may be deleted (runc kills a created
one); with --force a running or paused one is killed first, and a container that does
not exist is not an error (engines call `delete --force` after the fact).
"""

from __future__ import annotations

import os

from ocirt.errors import ContainerNotExist, OcirtError
from ocirt.state import CREATING, PAUSED, STOPPED, Container, Store, check_transition

KILL_WAIT_SECONDS = 10


def delete(store: Store, cid: str, force: bool = False) -> None:
    try:
        lock = store.lock(cid)
    except ContainerNotExist:
        if force:  # its `create --image` may have died before the state directory
            _remove_orphan_bundle(store, cid, mark_temps=True)
            return
        raise
    with lock:
        try:
            container = store.load(cid)
        except ContainerNotExist:
            if force:  # a directory without state: a create that died very early
                unmount_below(store.dir(cid))
                store.remove(cid)
                _remove_orphan_bundle(store, cid, mark_temps=True)
                return
            raise
        status = container.status()
        if status == CREATING:
            raise OcirtError(f"container {cid} is still being created")
        if not force:
            check_transition("delete", status, cid)
        if status != STOPPED:
            stop(container, status)
        destroy(store, container)


def stop(container: Container, status: str) -> None:
    """SIGKILL every process and wait until the init is gone."""
    from ocirt.runtime.kill import container_pids

    pidfd = -1
    try:
        pidfd = os.pidfd_open(container.pid)
    except OSError:
        pass
    try:
        for pid in container_pids(container):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if status == PAUSED:
            _thaw(container)  # a frozen process only dies once thawed
        if pidfd >= 0:
            import select  # a C extension: only a delete that kills loads it

            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(KILL_WAIT_SECONDS * 1000):
                raise OcirtError(f"container {container.id} did not stop within "
                                 f"{KILL_WAIT_SECONDS}s of SIGKILL")
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _thaw(container: Container) -> None:
    cg = container.data.get("cgroup")
    if cg:
        from ocirt.cgroups import manager_from_state

        manager_from_state(cg).thaw()


def destroy(store: Store, container: Container) -> None:
    """Remove what is left once no process runs: leftover processes of a container that
    shared the host pid namespace, the cgroup, the state; then the poststop hooks."""
    from ocirt.runtime.kill import container_pids

    for pid in container_pids(container):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    cg = container.data.get("cgroup")
    if cg:
        from ocirt.cgroups import manager_from_state

        manager_from_state(cg).destroy()
    if container.data.get("intel_rdt"):
        from ocirt import resctrl

        resctrl.destroy(container.data["intel_rdt"])
    if any(container.data.get(k) for k in ("sif_mount", "sif_bundle", "sif_lease")):
        from ocirt.runtime.image import release

        release(container.data, store)
    if container.data.get("host_mounts"):
        from ocirt.runtime.hostmounts import unmount_host_mounts

        unmount_host_mounts(container.data["host_mounts"])
    elif container.data.get("mounts_before") is not None and container.data.get("rootfs"):
        # its create died: unmount what its init had mounted below the rootfs
        from ocirt.runtime.hostmounts import host_mounts_below, unmount_host_mounts

        before = container.data["mounts_before"]
        unmount_host_mounts([m for m in host_mounts_below(container.data.get("rootfs", ""))
                             if m not in before])
    unmount_below(container.dir)
    store.remove(container.id)
    _remove_orphan_bundle(store, container.id)
    run_poststop(container)


def _remove_orphan_bundle(store: Store, cid: str, mark_temps: bool = False) -> None:
    from ocirt.runtime.image import remove_orphan_bundle

    remove_orphan_bundle(store, cid, mark_temps)


def unmount_below(directory: str) -> None:
    """Detach whatever is still mounted below the container's state directory (a SIF
    root whose `create` was killed before its mount record was saved): nothing but the
    container's own mounts is ever made there.

    Those are made on directories it created there (rootfs, sif-work): a state directory
    without a subdirectory has nothing mounted below it, and mountinfo is not read. On a
    Kubernetes node it has thousands of lines, and every delete would parse them."""
    try:
        with os.scandir(directory) as entries:
            if not any(e.is_dir(follow_symlinks=False) for e in entries):
                return
    except (FileNotFoundError, NotADirectoryError):
        return
    from ocirt.runtime.hostmounts import host_mounts_below, unmount_host_mounts

    unmount_host_mounts(host_mounts_below(os.path.realpath(directory)))


def run_poststop(container: Container) -> None:
    hooks = (container.data.get("hooks") or {}).get("poststop")
    if not hooks:
        return
    from ocirt.hooks import hook_state, run_hooks_warning

    state = hook_state(container.id, "stopped", container.pid, container.bundle,
                       container.data.get("annotations") or {},
                       container.data.get("ociVersion", ""))
    run_hooks_warning("poststop", hooks, state)
