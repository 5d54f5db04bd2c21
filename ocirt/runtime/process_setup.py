"""What `create` and `exec` check and prepare alike for the process they start: the
capabilities the runtime can grant, the LSM labels the host can apply, the fds that
reach the container, and the pid file.

A module apart from `create` so that `exec`, which runs on every engine's exec and
probe, does not load the create code.
"""

from __future__ import annotations

import os

from ocirt import log
from ocirt.errors import OcirtError, errno_text
from ocirt.state import write_atomic

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.spec.plan import Plan


def warn_and_keep_grantable(plan: Plan) -> None:
    """Capabilities the runtime cannot grant are dropped; every config warning is logged
    (as runc warns for unknown capability names)."""
    from ocirt.process.attrs import keep_grantable

    keep_grantable(plan.process)
    for warning in plan.process.warnings:
        log.warning(warning)


def check_security_labels(plan: Plan) -> None:
    """Refuse AppArmor profiles and SELinux labels the host cannot apply, before anything
    exists; a mount label is dropped without SELinux (runc ignores it then too)."""
    if not (plan.process.apparmor or plan.process.selinux_label or plan.mount_label):
        return
    from ocirt.linux import lsm

    lsm.check_available(plan.process.apparmor, plan.process.selinux_label)
    if plan.mount_label and not lsm.selinux_enabled():
        plan.mount_label = ""


def inherited_fds(preserve: int) -> tuple[int, list[str]]:
    """How many fds (from 0) reach the container: stdio, socket-activation fds (when
    LISTEN_PID is us, as runc checks), then --preserve-fds."""
    if preserve < 0:
        raise OcirtError(f"--preserve-fds: {preserve} is negative")
    extra_env: list[str] = []
    listen = 0
    if os.environ.get("LISTEN_FDS") and os.environ.get("LISTEN_PID") == str(os.getpid()):
        try:
            listen = max(0, int(os.environ["LISTEN_FDS"]))
        except ValueError:
            listen = 0
        if listen:
            extra_env = [f"LISTEN_FDS={listen}", "LISTEN_PID=1"]
    keep = 3 + listen + preserve
    for fd in range(3, keep):
        try:
            os.fstat(fd)
        except OSError:
            raise OcirtError(f"--preserve-fds {preserve}: fd {fd} is not open") from None
    return keep, extra_env


def write_pid_file(path: str, pid: int) -> None:
    """The host PID, no newline (runc's format), written atomically."""
    path = os.path.abspath(path)
    try:
        write_atomic(path, str(pid).encode(), 0o644)
    except OSError as exc:
        raise OcirtError(f"write pid file {path}: {errno_text(exc.errno or 0)}") from None
