"""The tables that map runtime-spec strings onto kernel values.

The same tables drive the conversion (`ocirt.spec.plan`) and `ocirt features`, so the
features document can never claim something the conversion does not do.
"""

from __future__ import annotations

from ocirt.linux import consts as c

# mount(2) flags by option name: (clear?, flag). runc's table.
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "acl": (False, c.MS_POSIXACL),
    "async": (True, c.MS_SYNCHRONOUS),
    "atime": (True, c.MS_NOATIME),
    "bind": (False, c.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, c.MS_NODEV),
    "diratime": (True, c.MS_NODIRATIME),
    "dirsync": (False, c.MS_DIRSYNC),
    "exec": (True, c.MS_NOEXEC),
    "iversion": (False, c.MS_I_VERSION),
    "lazytime": (False, c.MS_LAZYTIME),
    "loud": (True, c.MS_SILENT),
    "mand": (False, c.MS_MANDLOCK),
    "noacl": (True, c.MS_POSIXACL),
    "noatime": (False, c.MS_NOATIME),
    "nodev": (False, c.MS_NODEV),
    "nodiratime": (False, c.MS_NODIRATIME),
    "noexec": (False, c.MS_NOEXEC),
    "noiversion": (True, c.MS_I_VERSION),
    "nolazytime": (True, c.MS_LAZYTIME),
    "nomand": (True, c.MS_MANDLOCK),
    "norelatime": (True, c.MS_RELATIME),
    "nostrictatime": (True, c.MS_STRICTATIME),
    "nosuid": (False, c.MS_NOSUID),
    "nosymfollow": (False, c.MS_NOSYMFOLLOW),
    "rbind": (False, c.MS_BIND | c.MS_REC),
    "relatime": (False, c.MS_RELATIME),
    "remount": (False, c.MS_REMOUNT),
    "ro": (False, c.MS_RDONLY),
    "rw": (True, c.MS_RDONLY),
    "silent": (False, c.MS_SILENT),
    "strictatime": (False, c.MS_STRICTATIME),
    "suid": (True, c.MS_NOSUID),
    "sync": (False, c.MS_SYNCHRONOUS),
    "symfollow": (True, c.MS_NOSYMFOLLOW),
}

# Propagation options, applied with a separate mount(2) after the mount itself.
PROPAGATION: dict[str, int] = {
    "rprivate": c.MS_PRIVATE | c.MS_REC,
    "private": c.MS_PRIVATE,
    "rslave": c.MS_SLAVE | c.MS_REC,
    "slave": c.MS_SLAVE,
    "rshared": c.MS_SHARED | c.MS_REC,
    "shared": c.MS_SHARED,
    "runbindable": c.MS_UNBINDABLE | c.MS_REC,
    "unbindable": c.MS_UNBINDABLE,
}

# Recursive mount attributes (mount_setattr(2) with AT_RECURSIVE): (clear?, attr).
RECURSIVE_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, c.MOUNT_ATTR_RDONLY),
    "rrw": (True, c.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, c.MOUNT_ATTR_NOSUID),
    "rsuid": (True, c.MOUNT_ATTR_NOSUID),
    "rnodev": (False, c.MOUNT_ATTR_NODEV),
    "rdev": (True, c.MOUNT_ATTR_NODEV),
    "rnoexec": (False, c.MOUNT_ATTR_NOEXEC),
    "rexec": (True, c.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, c.MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, c.MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, c.MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, c.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, c.MOUNT_ATTR_NOATIME),
    "ratime": (True, c.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, c.MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, c.MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, c.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, c.MOUNT_ATTR_NOSYMFOLLOW),
}

# ocirt's own extensions (runc's): copy the destination's contents into a new tmpfs.
EXTENSIONS = ("tmpcopyup",)

# Filesystem types the rootfs code knows how to mount; any other type is passed to
# mount(2) as is (the kernel decides), as runc does.
KNOWN_FSTYPES = ("bind", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2")

CAPABILITIES: dict[str, int] = {
    name: num for num, name in enumerate((
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ))
}
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")

IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}

SCHED_POLICIES = {
    "SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
    "SCHED_IDLE": 5, "SCHED_DEADLINE": 6,
}
SCHED_FLAGS = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}

PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}

# linux.memoryPolicy (runtime-spec 1.3): set_mempolicy(2) modes and mode flags, from
# <linux/mempolicy.h>. Which modes take nodes: none (DEFAULT, LOCAL), at least one (the
# "nodes" set), or either (PREFERRED: no node means local allocation).
MEMORY_POLICY_MODES = {
    "MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
    "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6,
}
MEMORY_POLICY_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
MEMORY_POLICY_NEEDS_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY",
                             "MPOL_WEIGHTED_INTERLEAVE")
MEMORY_POLICY_FLAGS = {
    "MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14,
    "MPOL_F_NUMA_BALANCING": 1 << 13,
}

# Time namespace clocks: spec name -> name in /proc/<pid>/timens_offsets
TIME_CLOCKS = {"monotonic": "monotonic", "boottime": "boottime"}

# Sysctls that are namespaced, and which namespace they need (runc's validator).
SYSCTL_IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
              "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
SYSCTL_IPC_PREFIX = "fs.mqueue."
SYSCTL_NET_PREFIX = "net."
SYSCTL_UTS = ("kernel.hostname", "kernel.domainname")

# runc's default devices: (path, type, major, minor, mode)
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3, 0o666),
    ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666),
    ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666),
    ("/dev/tty", "c", 5, 0, 0o666),
)
# Device-cgroup rules runc always adds, so that the default devices work even under a
# deny-all rule (podman sends exactly that): (type, major, minor, access); -1 = any.
DEFAULT_DEVICE_RULES = (
    ("c", -1, -1, "m"),
    ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"),
    ("c", 1, 8, "rwm"),
    ("c", 1, 7, "rwm"),
    ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"),
    ("c", 1, 9, "rwm"),
    ("c", 136, -1, "rwm"),
    ("c", 5, 2, "rwm"),
    ("c", 10, 200, "rwm"),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)

# Mount destinations below /proc that runc lets through (lxcfs emulates them).
PROC_MOUNT_ALLOWED = (
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
)
