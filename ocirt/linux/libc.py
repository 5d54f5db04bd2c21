"""The one ctypes boundary: every kernel call that Python's `os` module does not offer.

Each wrapper raises an OSError whose text names the call and its path, in Go's spelling
(`mount /proc: permission denied`), so errors from deep inside the container init read
the same as runc's. Nothing else in ocirt imports ctypes.
"""

from __future__ import annotations

import ctypes
import os

from ocirt.errors import syscall_error

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# Syscalls glibc 2.36 does not wrap, by architecture. The numbers from 424 upward are the
# same on every architecture.
_NR = {
    "x86_64": {"pivot_root": 155, "ioprio_set": 251, "ioprio_get": 252, "keyctl": 250,
               "sched_setattr": 314, "seccomp": 317, "bpf": 321, "set_mempolicy": 238},
    "aarch64": {"pivot_root": 41, "ioprio_set": 30, "ioprio_get": 31, "keyctl": 219,
                "sched_setattr": 274, "seccomp": 277, "bpf": 280, "set_mempolicy": 237},
}.get(os.uname().machine, {})
_NR.update({
    "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "pidfd_open": 434, "close_range": 436, "openat2": 437,
    "mount_setattr": 442, "clone3": 435,
})


def _fail(op: str, path: str | None = None) -> OSError:
    return syscall_error(op, ctypes.get_errno(), path)


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def sys_call(name: str, *args: int | bytes | None | ctypes._SimpleCData) -> int:
    """Raw syscall by name; returns the result or raises OSError(errno)."""
    nr = _NR.get(name)
    if nr is None:
        raise OSError(38, f"{name} is not supported on {os.uname().machine}")
    ret = _syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        raise _fail(name)
    return ret


# --- namespaces ------------------------------------------------------------------------

def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int, what: str = "") -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail("setns", what or None)


def sethostname(name: str) -> None:
    data = name.encode()
    if _libc.sethostname(data, ctypes.c_size_t(len(data))) != 0:
        raise _fail("sethostname")


def setdomainname(name: str) -> None:
    data = name.encode()
    if _libc.setdomainname(data, ctypes.c_size_t(len(data))) != 0:
        raise _fail("setdomainname")


# --- mounts ----------------------------------------------------------------------------

def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None, what: str | None = None) -> None:
    """mount(2). `what` names the target in errors when `target` is a /proc/self/fd path."""
    if _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        raise _fail("mount", what or target)


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), ctypes.c_int(flags)) != 0:
        raise _fail("umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    try:
        sys_call("pivot_root", _b(new_root), _b(put_old))
    except OSError as exc:
        raise syscall_error("pivot_root", exc.errno or 0, new_root) from None


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int,
                  propagation: int = 0, userns_fd: int = 0, what: str | None = None) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    ret = _syscall(ctypes.c_long(_NR["mount_setattr"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret < 0:
        raise _fail("mount_setattr", what or path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    ret = _syscall(ctypes.c_long(_NR["open_tree"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("open_tree", path)
    return ret


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int,
               what: str | None = None) -> None:
    ret = _syscall(ctypes.c_long(_NR["move_mount"]), ctypes.c_int(from_dirfd), _b(from_path),
                   ctypes.c_int(to_dirfd), _b(to_path), ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("move_mount", what or to_path)


# --- files -----------------------------------------------------------------------------

class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    how = _OpenHow(flags, mode, resolve)
    ret = _syscall(ctypes.c_long(_NR["openat2"]), ctypes.c_int(dirfd), _b(path),
                   ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if ret < 0:
        raise _fail("openat2", path)
    return ret


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    ret = _syscall(ctypes.c_long(_NR["close_range"]), ctypes.c_uint(first), ctypes.c_uint(last),
                   ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("close_range")


# --- processes -------------------------------------------------------------------------

def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                      ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    if ret < 0:
        raise _fail(f"prctl({option})")
    return ret


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def seccomp_set_mode_filter(flags: int, program: bytes | None) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER) with a program of struct sock_filter (8 bytes
    each); returns the notify listener fd under SECCOMP_FILTER_FLAG_NEW_LISTENER, else 0.
    With no program the kernel only checks `flags`: EFAULT says it knows them all."""
    prog = None
    if program is not None:
        prog = ctypes.byref(_SockFprog(len(program) // 8, program))
    return sys_call("seccomp", ctypes.c_uint(1), ctypes.c_uint(flags), prog)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    hdr = _CapHeader(_CAP_V3, pid)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        raise _fail("capget")
    def join(field: str) -> int:
        return getattr(data[0], field) | (getattr(data[1], field) << 32)
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise _fail("capset")


def personality(persona: int) -> None:
    if _libc.personality(ctypes.c_ulong(persona)) == -1:
        raise _fail("personality")


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


def prlimit(pid: int, resource: int, soft: int, hard: int) -> None:
    """Set `pid`'s limits of `resource` (RLIM_INFINITY is 2**64 - 1). Here rather than
    the `resource` module: that is a shared library to load (~0.3 ms per container)
    for this one call."""
    limits = _Rlimit(soft, hard)
    if _libc.prlimit(ctypes.c_int(pid), ctypes.c_int(resource), ctypes.byref(limits),
                     None) != 0:
        raise _fail("prlimit")


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    sys_call("ioprio_set", ctypes.c_int(which), ctypes.c_int(who), ctypes.c_int(ioprio))


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64)]


def sched_setattr(pid: int, policy: int, flags: int, nice: int, priority: int,
                  runtime: int, deadline: int, period: int) -> None:
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), policy, flags, nice, priority, runtime,
                      deadline, period)
    sys_call("sched_setattr", ctypes.c_int(pid), ctypes.byref(attr), ctypes.c_uint(0))


def set_mempolicy(mode: int, nodes: list[int]) -> None:
    """set_mempolicy(2) for the calling thread: `mode` with its MPOL_F_* flags, `nodes`
    as a bitmask. The mask gets one spare high bit, as libnuma passes it: older kernels
    read one bit less than `maxnode` says."""
    if not nodes:
        sys_call("set_mempolicy", ctypes.c_int(mode), None, ctypes.c_ulong(0))
        return
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    mask = (ctypes.c_ulong * (max(nodes) // bits + 1))()
    for node in nodes:
        mask[node // bits] |= 1 << (node % bits)
    if max(nodes) % bits == bits - 1:
        mask = (ctypes.c_ulong * (len(mask) + 1))(*mask)
    sys_call("set_mempolicy", ctypes.c_int(mode), mask, ctypes.c_ulong(len(mask) * bits))


def keyctl(op: int, arg2: int | bytes | None = 0, arg3: int = 0) -> int:
    a2 = ctypes.c_char_p(arg2) if isinstance(arg2, bytes | type(None)) else ctypes.c_ulong(arg2)
    return sys_call("keyctl", ctypes.c_int(op), a2, ctypes.c_ulong(arg3))


def fstatfs_type(fd: int) -> int:
    """f_type (the filesystem magic) of the filesystem holding `fd`."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        raise _fail("fstatfs")
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17


def _gil_held_syscall() -> ctypes._CFuncPtr:
    """syscall(2) through a handle that keeps the GIL held across the call, as os.fork
    holds it across fork(): a thread that took it meanwhile would leave the child a GIL
    that no thread of its own holds. Made on first use (only `create` needs it)."""
    held = ctypes.PyDLL(None, use_errno=True)
    held.syscall.restype = ctypes.c_long
    for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child"):
        getattr(ctypes.pythonapi, name).restype = None
    return held.syscall


def fork_into_cgroup(cgroup_fd: int) -> int:
    """os.fork(), with the child started inside the cgroup2 directory `cgroup_fd`
    (clone3 with CLONE_INTO_CGROUP, Linux 5.7): no cgroup.procs write, which would wait
    for an RCU grace period. The interpreter is prepared and mended around it exactly as
    os.fork does (PyOS_BeforeFork, PyOS_AfterFork_*). Only for a single-threaded process
    (glibc's own fork handlers do not run): raises OSError(EAGAIN) otherwise, and
    OSError for clone3's refusals (ENOSYS on older kernels or under seccomp profiles
    that refuse clone3, EACCES, EBUSY, EOPNOTSUPP), so that the caller forks instead."""
    if len(os.listdir("/proc/self/task")) != 1:
        raise OSError(11, "clone3: the process has more than one thread")
    args = (ctypes.c_uint64 * 11)(CLONE_INTO_CGROUP, 0, 0, 0, _SIGCHLD, 0, 0, 0, 0, 0,
                                  cgroup_fd)
    syscall, api = _gil_held_syscall(), ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = syscall(ctypes.c_long(_NR["clone3"]), args, ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise syscall_error("clone3", err)
    return pid


# --- the new mount API (detached mounts: tmpfs copy-up, private procfs) -------------------

def fsopen(fstype: str, flags: int) -> int:
    ret = _syscall(ctypes.c_long(_NR["fsopen"]), _b(fstype), ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("fsopen", fstype)
    return ret


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None,
             aux: int = 0) -> None:
    ret = _syscall(ctypes.c_long(_NR["fsconfig"]), ctypes.c_int(fd), ctypes.c_uint(cmd),
                   _b(key), _b(value), ctypes.c_int(aux))
    if ret < 0:
        raise _fail("fsconfig", key)


def fsmount(fd: int, flags: int, attr_flags: int) -> int:
    ret = _syscall(ctypes.c_long(_NR["fsmount"]), ctypes.c_int(fd), ctypes.c_uint(flags),
                   ctypes.c_uint(attr_flags))
    if ret < 0:
        raise _fail("fsmount")
    return ret


# --- bpf(2): cgroup device programs (ocirt.cgroups.bpf) ------------------------------------

_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_GET_FD_BY_ID, _BPF_PROG_QUERY = 13, 16


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    nr = _NR.get("bpf")
    if nr is None:
        raise OSError(38, f"bpf is not supported on {os.uname().machine}")
    ret = _syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        raise _fail("bpf", what)
    return ret


def bpf_prog_load(prog_type: int, insns: bytes, license: str, log_size: int = 65536
                  ) -> tuple[int, str]:
    """BPF_PROG_LOAD; returns (fd, "") or raises OSError whose `verifier_log` attribute
    holds the verifier's explanation."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size)
    attr = (ctypes.c_char * 72)()
    ctypes.c_uint32.from_buffer(attr, 0).value = prog_type
    ctypes.c_uint32.from_buffer(attr, 4).value = len(insns) // 8
    ctypes.c_uint64.from_buffer(attr, 8).value = ctypes.addressof(code)
    ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(lic)
    ctypes.c_uint32.from_buffer(attr, 24).value = 1 if log_size else 0
    ctypes.c_uint32.from_buffer(attr, 28).value = log_size
    ctypes.c_uint64.from_buffer(attr, 32).value = ctypes.addressof(log) if log_size else 0
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD"), ""
    except OSError as exc:
        exc.verifier_log = log.value.decode(errors="replace")  # type: ignore[attr-defined]
        raise


def _attach_attr(target_fd: int, prog_fd: int, attach_type: int, flags: int,
                 replace_fd: int) -> ctypes.Array:
    attr = (ctypes.c_char * 20)()
    for off, value in ((0, target_fd), (4, prog_fd), (8, attach_type), (12, flags),
                       (16, replace_fd)):
        ctypes.c_uint32.from_buffer(attr, off).value = value
    return attr


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int,
                    replace_fd: int = 0) -> None:
    _bpf(_BPF_PROG_ATTACH, _attach_attr(target_fd, prog_fd, attach_type, flags, replace_fd),
         "BPF_PROG_ATTACH")


def bpf_prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(_BPF_PROG_DETACH, _attach_attr(target_fd, prog_fd, attach_type, 0, 0),
         "BPF_PROG_DETACH")


def bpf_prog_query(target_fd: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """IDs of the programs attached to `target_fd` for `attach_type`."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = (ctypes.c_char * 32)()
    ctypes.c_uint32.from_buffer(attr, 0).value = target_fd
    ctypes.c_uint32.from_buffer(attr, 4).value = attach_type
    ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(ids)
    ctypes.c_uint32.from_buffer(attr, 24).value = max_progs
    _bpf(_BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    count = ctypes.c_uint32.from_buffer(attr, 24).value
    return list(ids[:min(count, max_progs)])


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    attr = (ctypes.c_char * 12)()
    ctypes.c_uint32.from_buffer(attr, 0).value = prog_id
    return _bpf(_BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")


# --- inotify (cgroup v2 memory.events for `events`) --------------------------------------

def inotify_init1(flags: int) -> int:
    fd = _libc.inotify_init1(ctypes.c_int(flags))
    if fd < 0:
        raise _fail("inotify_init1")
    return fd


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    wd = _libc.inotify_add_watch(ctypes.c_int(fd), _b(path), ctypes.c_uint32(mask))
    if wd < 0:
        raise _fail("inotify_add_watch", path)
    return wd


def mount_propagation(path: str) -> int | None:
    """MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE bits of the mount holding `path`, even
    when its root is out of reach (a chroot); None on kernels without statmount (< 6.8)."""
    import struct

    buf = ctypes.create_string_buffer(256)
    statx_mnt_id_unique = 0x4000
    if _libc.statx(-100, _b(path), 0, statx_mnt_id_unique, buf) != 0:
        return None
    if not struct.unpack_from("I", buf, 0)[0] & statx_mnt_id_unique:
        return None
    mnt_id = struct.unpack_from("Q", buf, 144)[0]
    request = struct.pack("IIQQ", 24, 0, mnt_id, 0x2)  # STATMOUNT_MNT_BASIC
    out = ctypes.create_string_buffer(512)
    if _syscall(ctypes.c_long(457), request, out, ctypes.c_size_t(len(out)), 0) != 0:
        return None
    return struct.unpack_from("Q", out, 72)[0]
