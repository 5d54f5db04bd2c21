"""The container's root filesystem: mounts, pivot_root, and the final read-only touches.

Runs inside the container init, in its new mount namespace. Every mount target is
resolved inside the rootfs (`ocirt.fs.resolve`) and mounted through `/proc/self/fd/N`,
so a symlink in the image cannot redirect a mount to the host. The order follows runc:
prepare_root -> mounts -> devices -> (hooks) -> pivot_root -> console -> finalize ->
readonly and masked paths.
"""

from __future__ import annotations

import errno
import os
import stat

from ocirt.errors import OcirtError, errno_text, os_error_text
from ocirt.fs import resolve
from ocirt.fs.resolve import fd_path
from ocirt.linux import consts as c
from ocirt.linux import libc, lsm, mountinfo, syscalls
from ocirt.spec import options as opt
from ocirt.spec.plan import Mount, Plan

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

O_PATH = resolve._O_PATH


class RootfsError(OcirtError):
    pass


def _mount_error(m: Mount, exc: OSError | str) -> RootfsError:
    reason = exc if isinstance(exc, str) else os_error_text(exc)
    return RootfsError(f"error mounting {m.source!r} to rootfs at {m.destination!r}: {reason}")


# --- before the mounts -----------------------------------------------------------------

def prepare_root(plan: Plan) -> int:
    """Make our mount tree a slave of the host's (so nothing we mount propagates back),
    turn the rootfs into a mount point (pivot_root needs one) and return an O_PATH fd of
    it. `rootfsPropagation` is applied to the new root after pivot_root
    (`set_root_propagation`): applied here, "unbindable" would forbid the rootfs bind
    and "shared" would let our mounts reach the host."""
    try:
        libc.mount(None, "/", None, c.MS_SLAVE | c.MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return _prepare_root_in_chroot(plan)
    _make_parent_private(plan.rootfs)
    libc.mount(plan.rootfs, plan.rootfs, None, c.MS_BIND | c.MS_REC)
    return os.open(plan.rootfs, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _prepare_root_in_chroot(plan: Plan) -> int:
    """We run in a chroot: "/" is not a mount point, so neither its propagation can be
    changed nor pivot_root used (runc fails here). If the mount holding our root does not
    propagate anywhere, our mounts stay ours: bind the rootfs, make it a slave, and enter
    it with MS_MOVE + chroot (--no-pivot's way)."""
    propagation = libc.mount_propagation("/")
    if propagation is None or propagation & c.MS_SHARED:
        why = ("is shared" if propagation is not None else
               "cannot be checked on this kernel (statmount needs Linux 6.8)")
        raise RootfsError("ocirt runs in a chroot whose root mount " + why + ": the "
                          "container's mounts could propagate out of it; run ocirt in a "
                          "private mount namespace (unshare --mount --propagation private)")
    _make_parent_private(plan.rootfs)  # MS_MOVE, like pivot_root, refuses a shared parent
    libc.mount(plan.rootfs, plan.rootfs, None, c.MS_BIND | c.MS_REC)
    libc.mount(None, plan.rootfs, None, c.MS_SLAVE | c.MS_REC)
    plan.no_pivot = True
    return os.open(plan.rootfs, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _make_parent_private(rootfs: str) -> None:
    """pivot_root refuses a shared parent mount, and a shared parent would propagate
    our bind mount of the rootfs back to the host."""
    best = None
    for entry in mountinfo.mounts():
        mp = entry.mountpoint
        if (rootfs == mp or rootfs.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mountpoint)
        ):
            best = entry
    if best is not None and any(o.startswith("shared:") for o in best.optional):
        libc.mount(None, best.mountpoint, None, c.MS_PRIVATE)


# --- the mounts ------------------------------------------------------------------------

def mount_all(root_fd: int, plan: Plan, idmapped: dict[int, int] | None = None,
              before_cgroup: Any = None) -> None:
    """Every mount of the plan, in order; `idmapped` holds the detached mounts `create`
    prepared for the idmapped ones (ocirt.fs.idmap), by index. `before_cgroup` is called
    before a cgroup mount, which shows the cgroups we are in."""
    for i, m in enumerate(plan.mounts):
        if m.fstype in ("cgroup", "cgroup2") and before_cgroup is not None:
            before_cgroup()
        try:
            mount_one(root_fd, plan, m, (idmapped or {}).get(i, -1))
        except RootfsError:
            raise
        except OSError as exc:
            raise _mount_error(m, exc) from None


def mount_one(root_fd: int, plan: Plan, m: Mount, detached: int = -1) -> None:
    if plan.mount_label and not m.is_bind:
        m = _labelled(m, plan.mount_label)
    if m.fstype in ("proc", "sysfs"):
        _check_plain_directory(root_fd, m)
        target = resolve.mkdir_all(root_fd, m.destination)
        with _Fd(target):
            libc.mount(m.source or m.fstype, fd_path(target), m.fstype, m.flags, m.data or None,
                       what=m.destination)
    elif m.fstype in ("cgroup", "cgroup2"):
        _mount_cgroup(root_fd, plan, m)
        return
    elif m.is_bind:
        _mount_bind(root_fd, plan, m, detached)
    elif m.fstype == "tmpfs":
        _mount_tmpfs(root_fd, plan, m)
    else:
        target = resolve.mkdir_all(root_fd, m.destination)
        with _Fd(target):
            _check_proc_destination(plan, m, target)
            libc.mount(m.source or m.fstype, fd_path(target), m.fstype, m.flags,
                       m.data or None, what=m.destination)
    _apply_propagation_and_attrs(root_fd, m)


def _labelled(m: Mount, label: str) -> Mount:
    """`m` carrying the SELinux mount label (create dropped the label without SELinux)."""
    data = lsm.mount_data(m.fstype, m.data, label)
    return Mount(m.source, m.destination, m.fstype, m.flags, data, m.propagation,
                 m.rec_set, m.rec_clr, m.tmpcopyup, m.options)


class _Fd:
    """Close an fd at the end of a with-block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        syscalls.current().close(self.fd)


def _check_plain_directory(root_fd: int, m: Mount) -> None:
    """procfs and sysfs only go on an ordinary directory: an image that ships /proc as a
    symlink is refused (CVE-2023-27561, CVE-2023-28642)."""
    st = resolve.lstat_in_root(root_fd, m.destination)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise _mount_error(m, f"filesystem {m.fstype!r} must be mounted on ordinary directory")


def _real_path(plan: Plan, fd: int) -> str:
    """The path of `fd` relative to the rootfs (for the checks that need a string)."""
    real = syscalls.current().readlink(fd_path(fd))
    if real == plan.rootfs:
        return "/"
    if real.startswith(plan.rootfs + "/"):
        return real[len(plan.rootfs):]
    return real


def _check_proc_destination(plan: Plan, m: Mount, target: int) -> None:
    """Nothing but procfs may be mounted on /proc, and only lxcfs-style files below it."""
    dest = _real_path(plan, target)
    if dest == "/proc":
        if m.fstype == "proc":
            return
        if m.is_bind:
            try:
                with _Fd(os.open(m.source, O_PATH | os.O_CLOEXEC)) as src:
                    if libc.fstatfs_type(src) == c.PROC_SUPER_MAGIC:
                        return
            except OSError:
                pass
        raise _mount_error(m, f"{dest!r} cannot be mounted because it is not of type proc")
    if dest.startswith("/proc/") and dest not in opt.PROC_MOUNT_ALLOWED:
        raise _mount_error(m, f"{dest!r} cannot be mounted because it is inside /proc")


def _mount_bind(root_fd: int, plan: Plan, m: Mount, detached: int = -1) -> None:
    if detached >= 0:
        # An idmapped source was opened on the host side; in a user namespace the
        # init may not even be able to reach its path.
        _bind_onto(root_fd, plan, m, detached, os.fstat(detached))
        return
    if m.idmapped:
        raise _mount_error(m, "idmapped mount was not prepared")
    try:
        # Opened once: what was checked (file or directory) is what gets mounted.
        source = os.open(m.source, O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise _mount_error(m, f"stat {m.source}: {errno_text(exc.errno or 0)}") from None
    with _Fd(source):
        _bind_onto(root_fd, plan, m, source, os.fstat(source))


def _bind_onto(root_fd: int, plan: Plan, m: Mount, source: int, src_st: os.stat_result
               ) -> None:
    """The bind mount of `source` (an O_PATH fd, or the detached idmapped mount)."""
    if stat.S_ISDIR(src_st.st_mode):
        target = resolve.mkdir_all(root_fd, m.destination)
    else:
        target = resolve.create_file(root_fd, m.destination, 0o755)
    with _Fd(target):
        _check_proc_destination(plan, m, target)
        if m.idmapped:
            from ocirt.fs import idmap

            idmap.attach(source, target, m.destination)
        else:
            libc.mount(fd_path(source), fd_path(target), None, c.MS_BIND | (m.flags & c.MS_REC),
                       what=m.destination)
    if m.flags & ~(c.MS_REC | c.MS_REMOUNT | c.MS_BIND):
        with _Fd(resolve.open_in_root(root_fd, m.destination)) as mounted:
            remount(mounted, m.flags | c.MS_REMOUNT | c.MS_BIND, m.destination)
    if m.flags & c.MS_RDONLY and m.flags & c.MS_REC:
        _readonly_cgroupfs_below(root_fd, plan, m.destination)


def _readonly_cgroupfs_below(root_fd: int, plan: Plan, destination: str) -> None:
    """A read-only rbind (rootless configs rbind /sys so) makes only its top mount
    read-only; the host's cgroup filesystems it brought along would stay writable, and
    in a user namespace they cannot be unmounted (CVE-2023-25809). Make them read-only
    too (other submounts keep their flags, as mount(8) leaves them)."""
    inside = plan.rootfs.rstrip("/")
    below = inside + "/" + destination.strip("/") + "/"
    for entry in mountinfo.mounts():
        if entry.fstype in ("cgroup", "cgroup2") and entry.mountpoint.startswith(below):
            rel = entry.mountpoint[len(inside):]
            try:
                fd = resolve.open_in_root(root_fd, rel)
            except OSError:
                continue  # covered by a later mount: out of reach anyway
            with _Fd(fd):
                libc.mount_setattr(fd, "", c.AT_EMPTY_PATH, c.MOUNT_ATTR_RDONLY, 0, what=rel)


def remount(fd: int, flags: int, what: str) -> None:
    """Change a mount's flags; in a user namespace the kernel locks the flags the mount
    already had (nosuid, nodev, ...), so retry keeping those."""
    try:
        libc.mount(None, fd_path(fd), None, flags, what=what)
        return
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise
    libc.mount(None, fd_path(fd), None, flags | locked_flags(fd), what=what)


_ST_TO_MS = ((c.ST_RDONLY, c.MS_RDONLY), (c.ST_NOSUID, c.MS_NOSUID), (c.ST_NODEV, c.MS_NODEV),
             (c.ST_NOEXEC, c.MS_NOEXEC), (c.ST_NOATIME, c.MS_NOATIME),
             (c.ST_NODIRATIME, c.MS_NODIRATIME), (c.ST_RELATIME, c.MS_RELATIME))


def locked_flags(fd: int) -> int:
    """The mount flags a mount currently has, as MS_* bits (from statvfs)."""
    st = os.statvfs(fd_path(fd))
    return sum(ms for st_bit, ms in _ST_TO_MS if st.f_flag & st_bit)


def _mount_tmpfs(root_fd: int, plan: Plan, m: Mount) -> None:
    """A tmpfs on the destination resolved (and made) in the root, mounted through its
    fd. (Its kernel calls go through ocirt.linux.syscalls: tests run it on a fake.)"""
    sc = syscalls.current()
    before = None
    try:
        with _Fd(resolve.open_in_root(root_fd, m.destination)) as existing:
            before = sc.fstat(existing)
    except FileNotFoundError:
        pass
    target = resolve.mkdir_all(root_fd, m.destination)
    with _Fd(target):
        _check_proc_destination(plan, m, target)
        # Mounted read-write for now: /dev is filled and tmpfs modes are fixed afterwards;
        # finalize() makes it read-only when asked.
        flags = m.flags & ~c.MS_RDONLY
        if m.tmpcopyup:
            _tmpfs_copyup(target, m, flags)
        else:
            sc.mount(m.source or "tmpfs", fd_path(target), "tmpfs", flags, m.data or None,
                     what=m.destination)
    if before is not None and "mode=" not in m.data:
        with _Fd(resolve.open_in_root(root_fd, m.destination)) as mounted:
            sc.chmod(fd_path(mounted), stat.S_IMODE(before.st_mode))


_MS_TO_ATTR = ((c.MS_RDONLY, c.MOUNT_ATTR_RDONLY), (c.MS_NOSUID, c.MOUNT_ATTR_NOSUID),
               (c.MS_NODEV, c.MOUNT_ATTR_NODEV), (c.MS_NOEXEC, c.MOUNT_ATTR_NOEXEC),
               (c.MS_NOATIME, c.MOUNT_ATTR_NOATIME), (c.MS_STRICTATIME, c.MOUNT_ATTR_STRICTATIME),
               (c.MS_NODIRATIME, c.MOUNT_ATTR_NODIRATIME))


def _tmpfs_copyup(target: int, m: Mount, flags: int) -> None:
    """A tmpfs pre-filled with what the image has at the destination: build it detached
    (fsopen/fsmount), copy into it through file descriptors, then attach it."""
    fs = libc.fsopen("tmpfs", c.FSOPEN_CLOEXEC)
    try:
        libc.fsconfig(fs, c.FSCONFIG_SET_STRING, "source", m.source or "tmpfs")
        for item in filter(None, (m.data or "").split(",")):
            key, eq, value = item.partition("=")
            if eq:
                libc.fsconfig(fs, c.FSCONFIG_SET_STRING, key, value)
            else:
                libc.fsconfig(fs, c.FSCONFIG_SET_FLAG, key)
        libc.fsconfig(fs, c.FSCONFIG_CMD_CREATE)
        attrs = sum(attr for ms, attr in _MS_TO_ATTR if flags & ms)
        mnt = libc.fsmount(fs, c.FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs)
    with _Fd(mnt):
        src = os.open(fd_path(target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with _Fd(src):
            copy_tree(src, mnt)
        libc.move_mount(mnt, "", target, "",
                        c.MOVE_MOUNT_F_EMPTY_PATH | c.MOVE_MOUNT_T_EMPTY_PATH,
                        what=m.destination)


def copy_tree(src_dir: int, dst_dir: int) -> None:
    """Copy a directory's contents (files, dirs, symlinks, devices, fifos) between two
    directory fds, keeping modes, owners and times. The destination directory itself is
    left alone (a tmpfs root keeps its mode= option)."""
    for entry in os.scandir(src_dir):
        name = entry.name
        est = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
        mode = est.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst_dir)
            with _Fd(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=src_dir)) as s, \
                    _Fd(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                | os.O_CLOEXEC, dir_fd=dst_dir)) as d:
                copy_tree(s, d)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
        elif stat.S_ISREG(mode):
            _copy_file(src_dir, dst_dir, name, mode)
        else:
            os.mknod(name, mode, est.st_rdev, dir_fd=dst_dir)
        os.chown(name, est.st_uid, est.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_dir)
        os.utime(name, ns=(est.st_atime_ns, est.st_mtime_ns), dir_fd=dst_dir,
                 follow_symlinks=False)


def _copy_file(src_dir: int, dst_dir: int, name: str, mode: int) -> None:
    with _Fd(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)) as s, \
            _Fd(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                        stat.S_IMODE(mode), dir_fd=dst_dir)) as d:
        while True:
            n = os.sendfile(d, s, None, 1 << 20)
            if n == 0:
                break


def _apply_propagation_and_attrs(root_fd: int, m: Mount) -> None:
    if not m.propagation and not (m.rec_set or m.rec_clr):
        return
    with _Fd(resolve.open_in_root(root_fd, m.destination)) as mounted:
        for flag in m.propagation:
            libc.mount(None, fd_path(mounted), None, flag, what=m.destination)
        if m.rec_set or m.rec_clr:
            libc.mount_setattr(mounted, "", c.AT_EMPTY_PATH | c.AT_RECURSIVE, m.rec_set,
                               m.rec_clr, what=m.destination)


# --- cgroup mounts ---------------------------------------------------------------------

def _mount_cgroup(root_fd: int, plan: Plan, m: Mount) -> None:
    """`type: cgroup` mounts the container's own cgroups: on a v2 host a cgroup2 mount
    (a bind of the container's cgroup without a cgroup namespace); on v1 a tmpfs with one
    entry per hierarchy, as runc lays it out."""
    # The host's hierarchies only: a /sys bind-mounted into the rootfs (rootless configs
    # do that) brings copies of them below the rootfs, which our tmpfs is about to cover.
    inside = plan.rootfs.rstrip("/") + "/"
    entries = [e for e in mountinfo.mounts(fstypes=("cgroup", "cgroup2"))
               if not e.mountpoint.startswith(inside)]
    own = mountinfo.cgroup_membership()
    v1 = [e for e in entries if e.fstype == "cgroup"]
    cgroupns = plan.has("cgroup")
    if not v1 or m.fstype == "cgroup2":
        _mount_cgroup2(root_fd, m, entries, own, cgroupns)
        return
    ro = m.flags & c.MS_RDONLY
    if ro:
        _readonly_underneath(root_fd, m.destination)
    tmpfs = Mount("tmpfs", m.destination, "tmpfs", c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC,
                  "mode=755", [], 0, 0, False, [])
    _mount_tmpfs(root_fd, plan, tmpfs)
    names = []
    for entry in v1:
        key = mountinfo.v1_hierarchy_key(entry)
        name = os.path.basename(entry.mountpoint)
        names.append(name)
        sub = resolve.mkdir_all(root_fd, f"{m.destination}/{name}")
        with _Fd(sub):
            if cgroupns:
                source = "systemd" if key.startswith("name=") else "cgroup"
                libc.mount(source, fd_path(sub), "cgroup",
                           c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC | ro, key,
                           what=f"{m.destination}/{name}")
            else:
                path = own.get(key, "/")
                rel = os.path.relpath(path, entry.root) if entry.root != "/" else path
                source = os.path.normpath(entry.mountpoint + "/" + rel.lstrip("/"))
                libc.mount(source, fd_path(sub), None, c.MS_BIND | c.MS_REC,
                           what=f"{m.destination}/{name}")
        if not cgroupns:
            with _Fd(resolve.open_in_root(root_fd, f"{m.destination}/{name}")) as mounted:
                remount(mounted, c.MS_BIND | c.MS_REMOUNT | c.MS_NOSUID | c.MS_NODEV
                        | c.MS_NOEXEC | ro, f"{m.destination}/{name}")
    for name in names:  # comounted hierarchies ("cpu,cpuacct") get one symlink per part
        if "," in name:
            for part in name.split(","):
                try:
                    with _Fd(resolve.open_in_root(root_fd, m.destination)) as d:
                        os.symlink(name, part, dir_fd=d)
                except FileExistsError:
                    pass
    if ro:
        with _Fd(resolve.open_in_root(root_fd, m.destination)) as mounted:
            remount(mounted, c.MS_BIND | c.MS_REMOUNT | c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV
                    | c.MS_NOEXEC, m.destination)


def _readonly_underneath(root_fd: int, destination: str) -> None:
    """Host cgroup mounts that an rbind of /sys brought along (rootless configs do that)
    end up covered by our tmpfs; make them read-only too, since a user namespace cannot
    unmount them (CVE-2023-25809: no writable host cgroupfs in the container)."""
    try:
        fd = resolve.open_in_root(root_fd, destination)
    except OSError:
        return
    with _Fd(fd):
        try:
            libc.mount_setattr(fd, "", c.AT_EMPTY_PATH | c.AT_RECURSIVE, c.MOUNT_ATTR_RDONLY,
                               0, what=destination)
        except OSError:
            pass  # not a mount point: nothing is there to protect


def _mount_cgroup2(root_fd: int, m: Mount, entries: list, own: dict[str, str],
                   cgroupns: bool) -> None:
    target = resolve.mkdir_all(root_fd, m.destination)
    with _Fd(target):
        try:
            libc.mount(m.source or "cgroup2", fd_path(target), "cgroup2", m.flags,
                       m.data or None, what=m.destination)
            return
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EBUSY):
                raise
        # In a user namespace without a cgroup namespace cgroup2 cannot be mounted:
        # bind the container's own cgroup instead.
        unified = next((e for e in entries if e.fstype == "cgroup2"), None)
        if unified is None:
            raise _mount_error(m, "no cgroup2 hierarchy on this host")
        source = unified.mountpoint
        if cgroupns and own.get(""):
            source = os.path.normpath(unified.mountpoint + "/" + own[""].lstrip("/"))
        libc.mount(source, fd_path(target), None, c.MS_BIND | c.MS_REC, what=m.destination)
    if m.flags & ~(c.MS_REC | c.MS_BIND):
        with _Fd(resolve.open_in_root(root_fd, m.destination)) as mounted:
            remount(mounted, m.flags | c.MS_BIND | c.MS_REMOUNT, m.destination)


# --- switching root --------------------------------------------------------------------

def pivot_root(rootfs: str) -> None:
    """pivot_root(".", ".") then detach the old root (the trick from LXC that runc uses:
    no directory for the old root is needed in the image)."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        libc.pivot_root(".", ".")
        os.fchdir(old_root)
        # Make the old root a slave so our unmount does not propagate to the host.
        libc.mount(None, ".", None, c.MS_SLAVE | c.MS_REC)
        libc.umount(".", c.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(rootfs: str) -> None:
    """--no-pivot: hide the host's procfs and sysfs, move the rootfs over / and chroot.

    The kernel allows a new procfs/sysfs mount only where a full one is visible, so we
    first remove (or cover) every full host procfs/sysfs mount outside the rootfs."""
    for entry in mountinfo.mounts():
        if entry.root != "/" or entry.fstype not in ("proc", "sysfs"):
            continue
        mp = entry.mountpoint
        if mp == rootfs or mp.startswith(rootfs + "/"):
            continue
        try:
            libc.mount(None, mp, None, c.MS_SLAVE | c.MS_REC)
        except FileNotFoundError:
            continue
        try:
            libc.umount(mp, c.MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            libc.mount("tmpfs", mp, "tmpfs", 0)
    os.chdir(rootfs)
    libc.mount(rootfs, "/", None, c.MS_MOVE)
    chroot_here()


def chroot_here() -> None:
    os.chroot(".")
    os.chdir("/")


def reopen_dev_null() -> None:
    """Stdio that pointed at the host's /dev/null now points at the container's (runc),
    if that is the null device: checked on an O_PATH|O_NOFOLLOW fd before it is opened
    for I/O (a symlink, FIFO or tty put there is never opened)."""
    try:
        root = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with _Fd(root):
            checked = open_dev_null(root)
        with _Fd(checked):
            fd = os.open(fd_path(checked), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, OcirtError):
        return
    try:
        null = os.fstat(fd)
        for i in range(3):
            try:
                st = os.fstat(i)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                os.dup2(fd, i, inheritable=True)
    finally:
        os.close(fd)


# --- after pivot_root ------------------------------------------------------------------

def set_root_propagation(plan: Plan) -> None:
    if plan.rootfs_propagation:
        libc.mount(None, "/", None, plan.rootfs_propagation, what="/ (rootfsPropagation)")


def finalize(plan: Plan) -> None:
    """Read-only remounts that had to wait until /dev and the tmpfs modes were done."""
    root = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    with _Fd(root):
        for m in plan.mounts:
            if m.flags & c.MS_RDONLY and (m.fstype == "tmpfs" or m.destination == "/dev"):
                with _Fd(resolve.open_in_root(root, m.destination)) as mounted:
                    remount(mounted, m.flags | c.MS_REMOUNT | c.MS_BIND | c.MS_RDONLY,
                            m.destination)
    if plan.readonly:
        root = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        with _Fd(root):
            remount(root, c.MS_BIND | c.MS_REMOUNT | c.MS_RDONLY, "/")


def readonly_paths(paths: list[str]) -> None:
    root = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    with _Fd(root):
        for path in paths:
            try:
                fd = resolve.open_in_root(root, path)
            except FileNotFoundError:
                continue
            with _Fd(fd):
                try:
                    libc.mount(fd_path(fd), fd_path(fd), None, c.MS_BIND | c.MS_REC, what=path)
                except OSError as exc:
                    raise OcirtError(f"can't make {path!r} read-only: "
                                     f"{os_error_text(exc)}") from None
            with _Fd(resolve.open_in_root(root, path)) as mounted:
                keep = locked_flags(mounted) & (c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC)
                remount(mounted, keep | c.MS_BIND | c.MS_REMOUNT | c.MS_RDONLY, path)


def masked_paths(paths: list[str]) -> None:
    """Hide files behind the container's verified /dev/null and directories behind an
    empty read-only tmpfs. /dev/null is opened once and checked to be char 1:3: an image
    that swaps it for a symlink to a host file must not get that file bind-mounted
    (CVE-2025-31133)."""
    if not paths:
        return
    root = os.open("/", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    with _Fd(root):
        null = open_dev_null(root)
        with _Fd(null):
            for path in paths:
                try:
                    fd = resolve.open_in_root(root, path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                with _Fd(fd):
                    _mask(fd, null, path)


def open_dev_null(root: int) -> int:
    fd = resolve.open_in_root(root, "/dev/null", O_PATH | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise OcirtError("/dev/null in the container is not the null device (char 1:3)")
    return fd


def _mask(fd: int, null: int, path: str) -> None:
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        libc.mount("tmpfs", fd_path(fd), "tmpfs", c.MS_RDONLY, None, what=path)
    else:
        libc.mount(fd_path(null), fd_path(fd), None, c.MS_BIND, what=path)
