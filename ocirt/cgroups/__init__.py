"""Cgroup management behind one interface (v1, v2 and hybrid hosts).

The runtime talks to cgroups only through `Manager`:

    mgr = manager_for_plan(plan, container_id, systemd=..., rootless=...)
    mgr.create()            # make the container's cgroup(s); undo with destroy()
    mgr.add(pid)            # place a process (the init, or a process `exec` starts)
    mgr.birth()             # handles for a process born inside them instead (Birth)
    mgr.apply(resources)    # linux.resources (runtime-spec); raise OcirtError naming the field
    mgr.state()             # JSON-able description kept in state.json ("cgroup")
    mgr.planned_state()     # the same, recorded before create() makes anything
    manager_from_state(d)   # the same manager again, for later commands
    mgr.is_frozen() / freeze() / thaw() / pids() / destroy()
    frozen_from_state(d)    # is_frozen() of manager_from_state(d), without the managers
    join_from_state(d, pid) # add(pid) of manager_from_state(d), without the managers
    birth_from_state(d)     # birth() likewise, for a process `exec` starts
    fork_in_cgroups(birth)  # fork a process inside the cgroups a Birth opened
    mgr.update(resources)   # `ocirt update`: apply a LinuxResources delta, keep the merge
    mgr.stats()             # runc's `events --stats` data

Modules: `detect` (host layout), `resources` (linux.resources decoded), `v1` and `v2`
(the cgroupfs managers), `devices` and `bpf` (device rules, the v2 eBPF filter),
`stats`, `systemd` (`--systemd-cgroup`), `ops` (pause, resume, update, events, ps).
This module stays small: `state` and `list` import it to report `paused`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # importing typing costs ~2 ms on the `state` path
if TYPE_CHECKING:
    from typing import Any

# runtime-spec features.md, linux.cgroup: what this runtime can drive.
FEATURES = {"v1": True, "v2": True, "systemd": True, "systemdUser": False, "rdma": True}


class Birth:
    """Open handles that let a new process start inside the container's cgroups, so
    that create never writes the init's PID to a cgroup.procs file: that write takes the
    kernel's threadgroup lock for writing and waits for an RCU grace period (about 15 ms;
    bench/cgroup_move.py), and the init waits for it. `cgroup2_fd` is the container's
    cgroup2 directory, for clone3(CLONE_INTO_CGROUP) (-1: none); `tasks_fds` are the
    cgroup v1 `tasks` files the new process writes "0" to itself (a single thread moving
    itself takes no global lock), one for each of the directories in `v1`."""

    def __init__(self, cgroup2: str | None, v1: list[str]) -> None:
        self.cgroup2 = cgroup2
        self.v1 = list(v1)
        self.cgroup2_fd = -1
        self.tasks_fds: list[int] = []
        try:
            if cgroup2:
                self.cgroup2_fd = os.open(cgroup2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            for directory in self.v1:
                self.tasks_fds.append(os.open(os.path.join(directory, "tasks"),
                                              os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            self.close()
            raise

    def tasks(self) -> list[tuple[str, int]]:
        """(directory, its open `tasks` file) for each v1 directory: what the child
        writes "0" to (InitContext.cgroup_tasks)."""
        return list(zip(self.v1, self.tasks_fds, strict=True))

    def summary(self, born: tuple[str, ...]) -> str:
        """How much of it a fork_in_cgroups that returned `born` achieved, for --debug."""
        clone3 = "with" if self.cgroup2 and self.cgroup2 in born else "without"
        return f"{len(born)} of {len(self.v1) + bool(self.cgroup2)} directories, {clone3} clone3"

    def close(self) -> None:
        for fd in (self.cgroup2_fd, *self.tasks_fds):
            if fd >= 0:
                os.close(fd)
        self.cgroup2_fd, self.tasks_fds = -1, []


class Manager:
    """The interface, and the manager of a container that has no cgroup of its own (a
    rootless container whose cgroups are not writable): every operation does nothing."""

    name = "none"

    def create(self) -> None:
        pass

    def add(self, pid: int, skip: tuple[str, ...] = ()) -> None:
        """Move `pid` into the container's cgroups, but for the directories in `skip`
        (those it was born in: `birth`)."""

    def birth(self) -> Birth | None:
        """What lets the container's first process be born inside its cgroups (None:
        add() moves it once it exists)."""
        return None

    def apply(self, resources: dict[str, Any] | None) -> None:
        pass

    def update(self, resources: dict[str, Any]) -> None:
        from ocirt.errors import OcirtError

        raise OcirtError("cannot update resources: the container has no cgroup")

    def state(self) -> dict[str, Any] | None:
        return None

    def planned_state(self) -> dict[str, Any] | None:
        """state() as it will be once create() has made everything: saved before
        create() runs, so that `delete --force` after a SIGKILL mid-create finds it."""
        return self.state()

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

    def stats(self) -> dict[str, Any]:
        return {}

    def paths(self) -> dict[str, str]:
        """Controller ("" for cgroup2) -> the container's cgroup directory."""
        return {}


def frozen_from_state(data: dict[str, Any] | None) -> bool:
    """Whether the recorded cgroup is paused, read straight from the paths state.json
    keeps: `state`, `kill`, `delete` and `list` ask on every call, and one file needs
    none of the managers' modules (the managers' is_frozen answer the same way)."""
    if not data:
        return False
    kind = data.get("manager")
    if kind == "systemd":
        return frozen_from_state(data.get("inner"))
    if kind == "v1":
        paths = data.get("paths") or {}
        if paths.get("freezer"):
            return v1_frozen(paths["freezer"])
        return v2_frozen(paths.get("") or "")
    if kind == "v2":
        return v2_frozen(data.get("path") or "")
    return False


def join_from_state(data: dict[str, Any] | None, pid: int,
                    skip: tuple[str, ...] = ()) -> None:
    """Put `pid` into the recorded cgroup, as manager_from_state(data).add(pid) does,
    from the directories state.json keeps, but for those in `skip` (born there):
    `exec` does this on every call, and writing cgroup.procs needs none of the managers'
    modules (base, resources and v1 cost ~1.5 ms of CPU to import). A systemd
    container's unit exists by then, so only its cgroupfs directories (its "inner"
    state) are written, as SystemdManager.add does."""
    if not data:
        return
    if data.get("manager") == "systemd":
        inner = data.get("inner")
        if inner is None:  # no unit yet (never after create): the manager makes it
            manager_from_state(data).add(pid)
            return
        join_from_state(inner, pid, skip)
        return
    dirs = [d for d in _recorded_dirs(data) if d not in skip]
    if dirs:
        from ocirt.cgroups import fs

        fs.join(dirs, pid, rootless=bool(data.get("rootless")),
                explicit=bool(data.get("explicit")))


def birth_from_state(data: dict[str, Any] | None) -> Birth | None:
    """What lets a process `exec` starts be born inside the recorded cgroups (Birth), as
    FsManager.birth gives it to create: the cgroup2 directory (all of a v2 host, the
    unified hierarchy of a hybrid one) and the v1 ones. None where join_from_state must
    move it instead: rootless (a directory it may not write is skipped there), a systemd
    container without its unit, no directory, or one that cannot be opened (the move
    then says what is wrong, if anything is)."""
    if not data:
        return None
    if data.get("manager") == "systemd":
        return birth_from_state(data.get("inner"))
    if data.get("rootless"):
        return None
    dirs = _recorded_dirs(data)
    cgroup2 = data.get("path") if data.get("manager") == "v2" else \
        (data.get("paths") or {}).get("")
    if not dirs:
        return None
    try:
        return Birth(cgroup2 or None, [d for d in dirs if d != cgroup2])
    except OSError as exc:
        from ocirt import log

        log.debug(f"cgroups: the process is moved into them ({exc.strerror})")
        return None


def _recorded_dirs(data: dict[str, Any]) -> list[str]:
    """The cgroupfs directories a v1 or v2 manager's state keeps, each once."""
    kind = data.get("manager")
    if kind == "v1":
        return list(dict.fromkeys((data.get("paths") or {}).values()))
    if kind == "v2":
        return [data["path"]] if data.get("path") else []
    return []


def fork_in_cgroups(birth: Birth | None, clone: Any = None, fork: Any = os.fork
                    ) -> tuple[int, tuple[str, ...]]:
    """Fork inside the container's cgroups where `birth` allows: (the pid, 0 in the
    child; the directories the child is in from the start, which the move that follows
    skips). The cgroup2 directory by clone3, or by that move when clone3 is refused
    (ENOSYS, a seccomp profile, a full pids.max: moving in is never refused for it); the
    v1 ones by the child itself, first thing (ocirt.process.child.join_own_cgroups), so
    that every process after it is born there."""
    if birth is None:
        return fork(), ()
    born = tuple(birth.v1)
    if birth.cgroup2_fd >= 0:
        if clone is None:
            from ocirt.linux.libc import fork_into_cgroup as clone
        try:
            return clone(birth.cgroup2_fd), (*born, birth.cgroup2)
        except OSError as exc:
            from ocirt import log

            log.debug(f"clone3 into {birth.cgroup2}: {exc.strerror}; the process is moved "
                      "there")
    return fork(), born


def v1_frozen(directory: str) -> bool:
    """freezer.state says FROZEN (or FREEZING) because of this cgroup itself, not an
    ancestor (frozen by someone else is not paused by us)."""
    try:
        if _read(directory + "/freezer.state") == "THAWED":
            return False
    except OSError:
        return False
    try:
        return _read(directory + "/freezer.self_freezing") == "1"
    except OSError:
        return True


def v2_frozen(directory: str) -> bool:
    """cgroup.freeze is 1 ("" for no directory: a rootless container without a cgroup)."""
    if not directory:
        return False
    try:
        return _read(directory + "/cgroup.freeze") == "1"
    except OSError:
        return False


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode().strip()


def manager_for_plan(plan: Any, container_id: str, *, systemd: bool = False,
                     rootless: bool | str = False) -> Manager:
    from ocirt.cgroups.factory import for_plan

    return for_plan(plan, container_id, systemd=systemd, rootless=rootless)


def manager_from_state(data: dict[str, Any] | None) -> Manager:
    if not data:
        return Manager()
    kind = data.get("manager")
    if kind == "v1":
        from ocirt.cgroups.v1 import V1Manager

        return V1Manager.from_state(data)
    if kind == "v2":
        from ocirt.cgroups.v2 import V2Manager

        return V2Manager.from_state(data)
    if kind == "systemd":
        from ocirt.cgroups.systemd import SystemdManager

        return SystemdManager.from_state(data)
    return Manager()
