"""Reading a process from the host through /proc: status, capabilities, limits, mounts.

These are the host-side views the cases compare with the container's config and with
what the process reports from inside.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

CAP_FIELDS = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
              "CapBnd": "bounding", "CapAmb": "ambient"}

# /proc/<pid>/limits row names by RLIMIT_* type.
LIMIT_ROWS = {
    "RLIMIT_CPU": "Max cpu time", "RLIMIT_FSIZE": "Max file size",
    "RLIMIT_DATA": "Max data size", "RLIMIT_STACK": "Max stack size",
    "RLIMIT_CORE": "Max core file size", "RLIMIT_RSS": "Max resident set",
    "RLIMIT_NPROC": "Max processes", "RLIMIT_NOFILE": "Max open files",
    "RLIMIT_MEMLOCK": "Max locked memory", "RLIMIT_AS": "Max address space",
    "RLIMIT_LOCKS": "Max file locks", "RLIMIT_SIGPENDING": "Max pending signals",
    "RLIMIT_MSGQUEUE": "Max msgqueue size", "RLIMIT_NICE": "Max nice priority",
    "RLIMIT_RTPRIO": "Max realtime priority", "RLIMIT_RTTIME": "Max realtime timeout",
}

UNLIMITED = 2**64 - 1


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def caps_from_mask(mask: int) -> set[str]:
    return {name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1}


def status(pid: int | str) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def numa_policy(pid: int | str) -> str:
    """The NUMA memory policy of `pid`'s first mapping (its program text), as numa_maps
    shows it: the task's own policy unless the mapping has one (`bind=static:0`)."""
    with open(f"/proc/{pid}/numa_maps") as f:
        return f.readline().split()[1]


def caps(pid: int | str) -> dict[str, set[str]]:
    """{set name: capability names} from /proc/<pid>/status."""
    st = status(pid)
    return {name: caps_from_mask(int(st[field], 16)) for field, name in CAP_FIELDS.items()}


def caps_from_status_text(text: str) -> dict[str, set[str]]:
    """The same, from `grep Cap /proc/self/status` output taken inside a container."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in CAP_FIELDS:
            found[CAP_FIELDS[key.strip()]] = caps_from_mask(int(value.strip(), 16))
    return found


def limits(pid: int | str) -> dict[str, tuple[int, int]]:
    """{RLIMIT_*: (soft, hard)} with "unlimited" as 2**64-1."""
    by_row = {}
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        for line in f:
            name = line[:26].strip()
            soft, hard = line[26:].split()[:2]
            by_row[name] = (_limit(soft), _limit(hard))
    return {rl: by_row[row] for rl, row in LIMIT_ROWS.items() if row in by_row}


def _limit(text: str) -> int:
    return UNLIMITED if text == "unlimited" else int(text)


def ns(pid: int | str, kind: str) -> str:
    """The namespace link (e.g. 'net:[4026531840]') of `pid` for `kind`."""
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def cmdline(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        data = f.read()
    return [a.decode(errors="replace") for a in data.split(b"\0")[:-1]]


def environ(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        data = f.read()
    return [a.decode(errors="replace") for a in data.split(b"\0") if a]


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: tells a process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


@dataclass
class Mount:
    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    options: set[str]
    optional: list[str]  # shared:N, master:N, propagate_from:N, unbindable
    fstype: str
    source: str
    super_options: set[str]
    major_minor: str = ""

    @property
    def propagation(self) -> str:
        tags = {o.split(":")[0] for o in self.optional}
        if "shared" in tags:
            return "shared"
        if "master" in tags:
            return "slave"
        if "unbindable" in tags:
            return "unbindable"
        return "private"


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        f, p = pre.split(), post.split()
        if not sep or len(f) < 6 or len(p) < 2 or not (f[0].isdigit() and f[1].isdigit()):
            continue  # not a mountinfo line (other output around it)
        mounts.append(Mount(int(f[0]), int(f[1]), _unescape(f[3]), _unescape(f[4]),
                            set(f[5].split(",")), f[6:], p[0], _unescape(p[1]),
                            set(p[2].split(",")) if len(p) > 2 else set(), f[2]))
    return mounts


def mountinfo(pid: int | str) -> list[Mount]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse_mountinfo(f.read())


def mount_at(mounts: list[Mount], path: str) -> Mount | None:
    """The topmost mount whose mount point is `path`."""
    found = None
    for m in mounts:
        if m.mountpoint == path:
            found = m
    return found
