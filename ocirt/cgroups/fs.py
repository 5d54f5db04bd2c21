"""Reading and writing cgroup files, making and removing cgroup directories.

Every write goes through `write`, which turns a kernel refusal into an OcirtError that
names the resource, the file and the value (`linux.resources.memory.limit: write
"4096" to /sys/fs/cgroup/memory/c1/memory.limit_in_bytes: device or resource busy`);
a file that does not exist means the kernel lacks the feature, and says so.
"""

from __future__ import annotations

import errno
import os
import time

from ocirt import log
from ocirt.errors import OcirtError, errno_text

# rmdir of a cgroup fails with EBUSY while the kernel still lists tasks in it (processes
# that are exiting); we retry for this long.
REMOVE_TIMEOUT = 5.0
_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_raw(path: str, value: str) -> None:
    """One write(2) of `value` (cgroup files take one value per write)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def join(dirs: list[str], pid: int, *, rootless: bool, explicit: bool) -> list[str]:
    """Write `pid` to cgroup.procs in each directory. A rootless container without an
    explicit cgroupsPath skips the directories it may not write (runc's rootless
    fallback); any other failure is an error. Returns the skipped directories."""
    skipped = []
    for directory in dirs:
        try:
            write_raw(f"{directory}/cgroup.procs", str(pid))
        except OSError as exc:
            if may_skip(exc, rootless=rootless, explicit=explicit):
                log.debug(f"rootless: cannot join cgroup {directory}")
                skipped.append(directory)
                continue
            raise OcirtError(f"add pid {pid} to cgroup {directory}: "
                             f"{errno_text(exc.errno or 0)}") from None
    return skipped


def may_skip(exc: OSError, *, rootless: bool, explicit: bool) -> bool:
    """A rootless container without an explicit cgroupsPath goes without the cgroups it
    may not make or write (runc: errors there are fatal only when a path was given)."""
    return rootless and not explicit and exc.errno in _PERMISSION


def write(directory: str, name: str, value: str, field: str) -> None:
    path = os.path.join(directory, name)
    try:
        write_raw(path, value)
    except OSError as exc:
        raise write_error(field, path, value, exc) from None


def write_error(field: str, path: str, value: str, exc: OSError) -> OcirtError:
    if exc.errno == errno.ENOENT:
        reason = f"{path} does not exist (not supported by this kernel or cgroup)"
        return OcirtError(f"{field}: {reason}")
    return OcirtError(f"{field}: write {value!r} to {path}: {errno_text(exc.errno or 0)}")


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read()


def read_int(directory: str, name: str) -> int:
    """An integer file; "max" reads as -1."""
    text = read(directory, name).strip()
    return -1 if text == "max" else int(text)


def read_keyed(directory: str, name: str) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events ...)."""
    out = {}
    for line in read(directory, name).splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def missing_dirs(path: str) -> list[str]:
    """The directories `make_dirs(path)` would create now, outermost first."""
    missing = []
    current = os.path.normpath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing[::-1]


def make_dirs(path: str) -> list[str]:
    """mkdir -p; returns the directories this call created, outermost first."""
    made = []
    for directory in missing_dirs(path):
        try:
            os.mkdir(directory, 0o755)
            made.append(directory)
        except FileExistsError:
            pass
    return made


def procs(directory: str, recursive: bool = True) -> list[int]:
    """PIDs in the cgroup (and its descendants); [] when it is gone."""
    dirs = [top for top, _, _ in os.walk(directory)] if recursive else [directory]
    pids: list[int] = []
    for top in dirs:
        try:
            text = read(top, "cgroup.procs")
        except OSError:
            continue
        pids.extend(int(line) for line in text.split())
    return pids


def remove_tree(path: str, timeout: float = REMOVE_TIMEOUT) -> None:
    """rmdir the cgroup and any cgroups below it (deepest first), retrying while the
    kernel still lists exiting tasks; raises OcirtError naming the cgroup at the end."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        err = _remove_once(path)
        if err is None:
            return
        if err.errno != errno.EBUSY or time.monotonic() > deadline:
            left = procs(path)
            extra = f" ({len(left)} process(es) still in it)" if left else ""
            raise OcirtError(f"remove cgroup {err.filename}: {errno_text(err.errno or 0)}"
                             f"{extra}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _remove_once(path: str) -> OSError | None:
    try:  # the usual case, an empty leaf: one rmdir instead of listing it first
        os.rmdir(path)
        return None
    except FileNotFoundError:
        return None
    except OSError:
        pass  # cgroups below it, or tasks still exiting: the walk below says which
    if not os.path.isdir(path):
        return None
    for top, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            try:
                os.rmdir(os.path.join(top, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                exc.filename = os.path.join(top, name)
                return exc
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        exc.filename = path
        return exc
    return None
