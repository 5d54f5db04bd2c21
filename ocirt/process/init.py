"""The code that runs in the forked processes that become the container.

`create` forks the *intermediate*: it joins namespaces given by path, makes the new ones
(the user namespace first, so that the others belong to it) and forks the *init*, which
is PID 1 of the new pid namespace (and sees the new time namespace's offsets). The
intermediate reports the init's host PID and exits; the init prepares the root
filesystem and the process, then execs the sealed trampoline (ocirt.process.trampoline),
which waits on the exec fifo until `start` and execs the user process in place, keeping
its PID. No container process ever runs as, or waits as, the host's Python.

What the init shares with `exec`'s processes (the context, non-dumpable, fd hygiene,
identity, the trampoline's exec) is in ocirt.process.child. Nothing here may import a
module lazily: after pivot_root the host's Python files are out of reach, so every
module this code needs is imported at the top of this file.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import struct

from ocirt.errors import OcirtError, errno_text
from ocirt.fs import devices, resolve, rootfs
from ocirt.linux import consts as c
from ocirt.linux import libc, procfs
from ocirt.process import trampoline
from ocirt.process.child import (
    InitContext,
    apply_lsm,
    become_root_in_userns,
    close_other_fds,
    exec_process,
    fork_after_report,
    join_own_cgroups,
    join_session_keyring,
    make_non_dumpable,
    prepare_process,
    setup_terminal,
)

# --- stage 1: the intermediate -----------------------------------------------------------

def intermediate(ctx: InitContext) -> None:
    join_own_cgroups(ctx)
    make_non_dumpable()
    close_other_fds(ctx)
    ctx.channel.expect("go")
    plan = ctx.plan
    for kind in c.JOIN_ORDER:
        fd = ctx.ns_fds.get(kind)
        if fd is not None:
            libc.setns(fd, c.NAMESPACES[kind][0], plan.namespaces[kind])
            os.close(fd)
            if kind == "user":
                ctx.in_userns = True
                become_root_in_userns()
    if plan.creates("user"):
        libc.unshare(c.CLONE_NEWUSER)
        # An unprivileged parent can only write our uid_map/gid_map/setgroups while they
        # are its (a non-dumpable process's /proc files belong to root); nothing else is
        # in the new namespace yet to take advantage.
        unprivileged = os.geteuid() != 0
        if unprivileged:
            libc.prctl(c.PR_SET_DUMPABLE, 1)
        ctx.channel.send("idmap-request", pid=os.getpid())
        ctx.channel.expect("idmap-done")
        if unprivileged:
            make_non_dumpable()
        ctx.in_userns = True
        become_root_in_userns()
    flags = 0
    for kind, path in plan.namespaces.items():
        if path == "" and kind not in ("user", "cgroup"):  # cgroup: the init makes it
            flags |= c.NAMESPACES[kind][0]
    if flags:
        libc.unshare(flags)
    if plan.time_offsets:
        _write_time_offsets(plan.time_offsets)
    fork_after_report(ctx, init, "init-pid")


def _write_time_offsets(offsets: dict[str, tuple[int, int]]) -> None:
    """Offsets of the new time namespace, written before its first process exists.

    A non-dumpable process's /proc files belong to the root of the user namespace its
    memory was created in, which is the host's: in a new user namespace we could not open
    our own timens_offsets. So we are dumpable for the duration of this one write (no
    other process is in our new namespaces yet to take advantage of it)."""
    text = "".join(f"{clock} {secs} {nanos}\n" for clock, (secs, nanos) in offsets.items())
    libc.prctl(c.PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(text)
    except OSError as exc:
        raise OcirtError(f"write /proc/self/timens_offsets: {errno_text(exc.errno or 0)}") \
            from None
    finally:
        make_non_dumpable()


# --- stage 2: the container init -------------------------------------------------------

def init(ctx: InitContext) -> None:
    plan = ctx.plan
    os.setsid()
    if plan.creates("network"):
        loopback_up()
    join_session_keyring(ctx)
    if plan.creates("cgroup"):
        # Its root is the cgroup we are in when it is made: the container's.
        wait_for_cgroups(ctx)
        libc.unshare(c.CLONE_NEWCGROUP)
    if plan.has("mount"):
        root_fd = rootfs.prepare_root(plan)
    else:
        # No mount namespace: the mounts land in the runtime's namespace, below the
        # rootfs (runc does the same); `create` records them and `delete` removes them.
        root_fd = os.open(plan.rootfs, resolve._O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    rootfs.mount_all(root_fd, plan, ctx.idmapped, before_cgroup=lambda: wait_for_cgroups(ctx))
    for fd in ctx.idmapped.values():
        os.close(fd)
    ctx.idmapped = {}
    if plan.setup_dev:
        wait_for_cgroups(ctx)  # device nodes are made under the container's device rules
        devices.setup_dev(root_fd, plan, ctx.in_userns)
    ctx.channel.send("create-hooks")
    msg, _ = ctx.channel.expect("create-hooks-done")
    ctx.host_pid = int(msg.get("pid") or os.getpid())
    os.chdir(plan.rootfs)
    if plan.hooks.get("createContainer"):
        ctx.hooks.run_hooks("createContainer", plan.hooks["createContainer"],
                            hook_state(ctx, "creating"))
    os.close(root_fd)
    if not plan.has("mount"):
        rootfs.chroot_here()
    elif plan.no_pivot:
        rootfs.move_root(plan.rootfs)
    else:
        rootfs.pivot_root(plan.rootfs)
    if plan.setup_dev:
        rootfs.reopen_dev_null()
    _make_cwd(plan.process.cwd)
    if plan.process.terminal:
        setup_terminal(ctx)
    if plan.has("mount"):
        rootfs.finalize(plan)
        rootfs.set_root_propagation(plan)
    os.umask(plan.process.umask if plan.process.umask is not None else 0o022)
    if plan.hostname is not None:
        libc.sethostname(plan.hostname)
    if plan.domainname is not None:
        libc.setdomainname(plan.domainname)
    apply_lsm(plan)
    write_sysctls(plan.sysctl)
    rootfs.readonly_paths(plan.readonly_paths)
    rootfs.masked_paths(plan.masked_paths)
    ctx.channel.send("ready")
    ctx.channel.expect("ready-ack")
    # From here on the init is the sealed trampoline, waiting for `start` on the exec
    # fifo; its successful execve closes the sync socket, which tells `create` we are
    # initialized. Nothing else is left to run as Python (the startContainer hooks run
    # from `start`, ocirt.runtime.start), and where no trampoline can run, `create`
    # fails with the reason (fail closed).
    if not plan.has_process:
        # The trampoline waits, then fails to exec "" (ENOENT): `start` says why.
        exec_process(ctx, "", [], trampoline.sealed_fd(), wait_fd=ctx.fifo_fd, args=[])
    exec_path, env = prepare_process(ctx)
    exec_process(ctx, exec_path, env, trampoline.sealed_fd(), wait_fd=ctx.fifo_fd)


def wait_for_cgroups(ctx: InitContext) -> None:
    """Return once `create` has moved us into the container's cgroups (it does that while
    we make our mounts: see ocirt.process.protocol). Asked once, before the first step
    that depends on them."""
    if ctx.in_cgroups:
        return
    ctx.channel.send("cgroup-join")
    ctx.channel.expect("cgroup-joined")
    ctx.in_cgroups = True


def _make_cwd(cwd: str) -> None:
    try:
        os.makedirs(cwd, 0o755, exist_ok=True)
    except OSError:
        pass  # the chdir after the user switch reports a useful error


def hook_state(ctx: InitContext, status: str) -> str:
    """The state for hooks run in the container's namespaces: the pid "as seen by the
    container" (runtime-spec runtime.md, State)."""
    p = ctx.plan
    return ctx.hooks.hook_state(ctx.container_id, status, os.getpid(), p.bundle,
                                p.annotations, p.oci_version)


def loopback_up() -> None:
    """Bring `lo` up in the new network namespace (SIOCSIFFLAGS; no netlink needed)."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), c.SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock.fileno(), c.SIOCSIFFLAGS, struct.pack("16sH14x", b"lo",
                                                               flags | c.IFF_UP))
    finally:
        sock.close()


def write_sysctls(sysctl: dict[str, str]) -> None:
    """Write sysctls through a private procfs (ocirt.linux.procfs): a mount inside the
    container's /proc cannot redirect them (CVE-2025-52881)."""
    if not sysctl:
        return
    try:
        proc = procfs.private_root()
    except OcirtError as exc:
        raise OcirtError(f"cannot write sysctls: {exc.message}") from None
    try:
        for key, value in sysctl.items():
            try:
                fd = procfs.open_beneath(proc, "sys/" + key.replace(".", "/"), os.O_WRONLY)
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise OcirtError(f"write sysctl {key}={value!r}: "
                                 f"{errno_text(exc.errno or 0)}") from None
    finally:
        os.close(proc)
