"""Linux security modules: whether SELinux or AppArmor is on, and the labels a container
process execs with.

The runtime asks before anything is created (so a label the host cannot apply is a clear
error, as in runc, not a half-built container) and writes the labels in the init just
before the final execve, through a private procfs (ocirt.linux.procfs).
SELinux mount labels become a `context="..."` mount option, and only when SELinux is on:
runc ignores `linux.mountLabel` on hosts without it, and engines rely on that.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import libc, procfs

SELINUX_MAGIC = 0xF97CFF8C
SELINUXFS = "/sys/fs/selinux"
# Filesystems that take no context= option (runc mounts them unlabelled as well).
UNLABELLED = frozenset({"proc", "sysfs", "mqueue", "cgroup", "cgroup2", "bind"})


def selinux_enabled() -> bool:
    """SELinux is on when selinuxfs is mounted where libselinux looks for it."""
    try:
        fd = os.open(SELINUXFS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return libc.fstatfs_type(fd) == SELINUX_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


APPARMOR_PROFILES = "/sys/kernel/security/apparmor/profiles"


def apparmor_loaded(profile: str) -> bool | None:
    """Whether the kernel has `profile` loaded (None: the list cannot be read, e.g.
    securityfs is not mounted; the init's write then says)."""
    if profile == "unconfined":
        return True
    try:
        with open(APPARMOR_PROFILES) as f:
            names = {line.rsplit(" (", 1)[0] for line in f.read().splitlines()}
    except OSError:
        return None
    return profile in names


def check_available(apparmor: str, selinux_label: str) -> None:
    """Refuse labels this host cannot apply (runc's wording for SELinux), before
    anything of the container exists."""
    if apparmor and not apparmor_enabled():
        raise OcirtError(f"apparmor profile {apparmor!r} is set in config, but AppArmor is "
                         "not enabled on this host")
    if apparmor and apparmor_loaded(apparmor) is False:
        raise OcirtError(f"apparmor profile {apparmor!r} is not loaded (not in "
                         f"{APPARMOR_PROFILES}); load it with apparmor_parser first")
    if selinux_label and not selinux_enabled():
        raise OcirtError("selinux label is specified in config, but selinux is disabled or "
                         "not supported")


def mount_data(fstype: str, data: str, label: str) -> str:
    """`data` with the SELinux mount label added where the filesystem takes one."""
    if not label or fstype in UNLABELLED or "context=" in data:
        return data
    option = f'context="{label}"'
    return f"{data},{option}" if data else option


def apply_exec_labels(apparmor: str, selinux_label: str) -> None:
    """Labels the kernel applies at this thread's next execve."""
    if apparmor:
        try:
            write_attr("apparmor/exec", f"exec {apparmor}", fallback="exec")
        except OcirtError as exc:
            raise OcirtError(f"apparmor failed to apply profile {apparmor!r}: {exc}") from None
    if selinux_label:
        write_attr("exec", selinux_label)


def write_attr(name: str, value: str, fallback: str = "") -> None:
    """Write one of our LSM attributes through a private procfs (ocirt.linux.procfs): a
    procfs file bind-mounted over /proc/thread-self/attr/... by the container would
    otherwise take the label (CVE-2025-52881). thread-self is read, not followed, so
    that our thread's directory is named as that procfs numbers it."""
    root = procfs.private_root()
    try:
        try:
            rel = os.readlink("thread-self", dir_fd=root) + f"/attr/{name}"
            fd = procfs.open_beneath(root, rel, os.O_WRONLY)
        except FileNotFoundError:
            if not fallback:
                raise OcirtError(f"/proc/thread-self/attr/{name} does not exist") from None
            write_attr(fallback, value)
            return
        except OSError as exc:
            raise OcirtError(f"open /proc/thread-self/attr/{name}: "
                             f"{errno_text(exc.errno or 0)}") from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise OcirtError(f"write /proc/{rel}: {errno_text(exc.errno or 0)}") from None
        finally:
            os.close(fd)
    finally:
        os.close(root)
