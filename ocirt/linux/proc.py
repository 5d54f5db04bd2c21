"""Small /proc readers and writers: process identity (start time), liveness, namespace
lookups, and the id maps of a user namespace."""

from __future__ import annotations

import os

from ocirt.errors import OcirtError, errno_text


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one (whose
    uid_map is the identity over the whole range), as runc's userns.RunningInUserNS."""
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields != ["0", "0", "4294967295"]


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and ')'; it ends at the last ')'.
    return data[data.rfind(b")") + 2 :].decode().split()


def start_time(pid: int) -> int | None:
    """Start time of the process in clock ticks since boot (field 22), or None if gone.

    A PID and its start time together identify a process: PIDs are reused, start times of
    reused PIDs differ. runc uses the same pair to tell its init from an impostor.
    """
    fields = stat_fields(pid)
    if fields is None:
        return None
    return int(fields[19])


def is_running(pid: int, expected_start: int | None) -> bool:
    """True if `pid` is alive (not a zombie) and is the process that started at
    `expected_start`."""
    if pid <= 0:
        return False
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return expected_start is None or int(fields[19]) == expected_start


def ns_inode(pid: int | str, ns: str) -> str | None:
    """`ns:[inode]` of a process's namespace (readlink of /proc/<pid>/ns/<ns>)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{ns}")
    except OSError:
        return None


def pids_in_pid_namespace(ns_link: str) -> list[int]:
    """Every process on the host whose pid namespace is `ns_link`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and ns_inode(name, "pid") == ns_link:
            found.append(int(name))
    return found


def write_file(pid: int, name: str, text: str) -> None:
    """One write(2) to /proc/<pid>/<name> (uid_map, gid_map and setgroups take exactly
    one), with an error that names the file."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OcirtError(f"write /proc/{pid}/{name}: {errno_text(exc.errno or 0)}") from None


def write_id_map(pid: int, name: str, entries: list[tuple[int, int, int]]) -> None:
    """uid_map or gid_map of the user namespace of `pid`: (inside, outside, size) lines."""
    write_file(pid, name, "".join(f"{inside} {outside} {size}\n"
                                  for inside, outside, size in entries))


def become_user(uid: int, gid: int) -> None:
    """Drop every privilege and continue as `uid` (its groups from the user database, or
    only `gid` when it has no entry there): what that user running us would be."""
    import pwd

    try:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            os.setgroups([])
        else:
            os.initgroups(entry.pw_name, entry.pw_gid)
            gid = entry.pw_gid
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise OcirtError(f"switch to user {uid}: {errno_text(exc.errno or 0)}") from None
