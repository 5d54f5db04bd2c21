"""The code that runs in the forked processes that become the container.

`create` forks the *intermediate*: it joins namespaces given by path, makes the new ones
(the user namespace first, so that the others belong to it) and forks the *init*, which
is PID 1 of the new pid namespace (and sees the new time namespace's offsets). The
intermediate reports the init's host PID and exits; the init prepares the root
filesystem and the process, reports `initialized`, then waits on the exec fifo until
`start`, and finally execs the user process in place, keeping its PID.

Nothing here may import a module lazily: after pivot_root the host's Python files are
out of reach, so every module this code needs is imported at the top of this file.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import fcntl
import os
import struct
import sys

from ocirt.errors import OcirtError, errno_text, os_error_text
from ocirt.fs import console, devices, resolve, rootfs
from ocirt.linux import consts as c
from ocirt.linux import libc, lsm
from ocirt.process import attrs, trampoline
from ocirt.process.protocol import Channel
from ocirt.spec.plan import Plan

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any, NoReturn

# Signals whose default action ends a process: while the init waits for `start` (as PID 1
# of its namespace, where default actions do not apply) they end it explicitly, as runc's
# init does.
_FATAL_WHILE_WAITING = (1, 2, 3, 10, 12, 14, 15)  # HUP INT QUIT USR1 USR2 ALRM TERM


class InitContext:
    """What the forked processes need besides the plan: inherited fds and names."""

    def __init__(self, plan: Plan, container_id: str, channel: Channel, fifo_fd: int,
                 console_fd: int, ns_fds: dict[str, int], keep_fds: int,
                 extra_env: list[str], seccomp: Any, hooks: Any) -> None:
        self.plan = plan
        self.container_id = container_id
        self.channel = channel
        self.fifo_fd = fifo_fd
        self.console_fd = console_fd
        self.ns_fds = ns_fds
        self.keep_fds = keep_fds  # fds 0..keep_fds-1 reach the container (stdio + preserved)
        self.extra_env = extra_env  # LISTEN_FDS/LISTEN_PID when socket activation applies
        self.seccomp = seccomp  # a compiled filter (ocirt.seccomp), or None
        self.hooks = hooks  # the ocirt.hooks module when the config has hooks, else None
        self.in_userns = False
        self.in_cgroups = False  # the init: create said it is in the container's cgroups
        self.host_pid = 0  # our PID as the host sees it (for hooks' state), from the parent
        self.root_fd = -1  # `exec`: the container's root directory (/proc/<init>/root)
        self.exec_pid = 0  # `exec`: the new process's PID as the host sees it
        self.idmapped: dict[int, int] = {}  # mount index -> detached idmapped mount fd


def run_child(stage: Any, ctx: InitContext) -> NoReturn:
    """Run one stage in a forked child; report an error to the parent and never return."""
    code = 1
    try:
        stage(ctx)
        code = 0
    except OcirtError as exc:
        _report(ctx, exc.message)
    except OSError as exc:
        _report(ctx, os_error_text(exc))
    except BaseException as exc:  # a bug: send what we know, never a silent exit
        _report(ctx, f"internal error in container init: {type(exc).__name__}: {exc} "
                     f"(at {_where(exc)})")
    finally:
        os._exit(code)


def _where(exc: BaseException) -> str:
    """file:line of the innermost frames, without the traceback module (whose imports
    would fail after pivot_root)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} {code.co_name}")
        tb = tb.tb_next
    return " <- ".join(reversed(frames[-3:]))


def _report(ctx: InitContext, message: str) -> None:
    try:
        ctx.channel.send("error", message=message)
    except OSError:
        try:
            os.write(2, f"ocirt init: {message}\n".encode())
        except OSError:
            pass


# --- stage 1: the intermediate -----------------------------------------------------------

def intermediate(ctx: InitContext) -> None:
    libc.prctl(c.PR_SET_DUMPABLE, 0)  # nothing in the container may ptrace us (CVE-2016-9962)
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
            libc.prctl(c.PR_SET_DUMPABLE, 0)
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
    if plan.process.cpu_affinity and plan.process.cpu_affinity[0]:
        attrs.set_affinity(plan.process.cpu_affinity[0], "initial")
    fork_after_report(ctx, init, "init-pid")


def fork_after_report(ctx: InitContext, stage: Any, message: str) -> None:
    """Fork the next stage, report its PID, then exit. The child waits for our exit
    (EOF on a pipe) before it speaks, so the parent always hears the PID first."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(w)
        while True:
            try:
                os.read(r, 1)
                break
            except InterruptedError:
                continue
        os.close(r)
        run_child(stage, ctx)
    os.close(r)
    ctx.channel.send(message, pid=pid)


def become_root_in_userns() -> None:
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        raise OcirtError("failed to become root in the user namespace (is 0 mapped?): "
                         f"{errno_text(exc.errno or 0)}") from None


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
        libc.prctl(c.PR_SET_DUMPABLE, 0)


def close_other_fds(ctx: InitContext) -> None:
    """Close every fd we did not bring on purpose (the engines leak some: fd 10 and 251
    here); runc marks them close-on-exec, we close them at once."""
    keep = set(range(ctx.keep_fds))
    keep.update(fd for fd in (ctx.channel.fileno(), ctx.fifo_fd, ctx.console_fd, ctx.root_fd)
                if fd >= 0)
    keep.update(ctx.ns_fds.values())
    keep.update(ctx.idmapped.values())
    if ctx.seccomp is not None:
        keep.update(ctx.seccomp.fds())  # the seccomp notify agent's socket
    low = 3
    for fd in sorted(keep | {1 << 30}):
        if fd >= low:
            if fd > low:
                libc.close_range(low, fd - 1)
            low = fd + 1


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
    if not plan.has_process:
        ctx.channel.send("initialized")
        ctx.channel.close()
        wait_for_start(ctx)
        os.write(ctx.fifo_fd, b"Ethe container has no process to start (config.json sets "
                              b"none)")
        os._exit(1)
    exec_path, env = prepare_process(ctx)
    tramp = trampoline.sealed_fd()
    ctx.channel.send("initialized")
    ctx.channel.close()
    if tramp >= 0 and not plan.hooks.get("startContainer"):
        # Python leaves the container now: the sealed trampoline waits for `start`.
        exec_process(ctx, exec_path, env, tramp, wait_fd=ctx.fifo_fd)
    wait_for_start(ctx)
    if plan.hooks.get("startContainer"):
        try:
            ctx.hooks.run_hooks("startContainer", plan.hooks["startContainer"],
                                hook_state(ctx, "created"))
        except OcirtError as exc:  # `start` fails, and the container stops (runtime-spec)
            os.write(ctx.fifo_fd, ("E" + exc.message).encode())
            os._exit(1)
    exec_process(ctx, exec_path, env, tramp)


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


def setup_terminal(ctx: InitContext, dev_console: bool = True) -> None:
    """A pty from the container's devpts as our stdio and controlling terminal, its
    master sent to the engine. Only the container's init also gets it as /dev/console."""
    root = os.open("/", resolve._O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        master, slave, name = console.open_pty(root)
        try:
            if ctx.plan.process.console_size:
                rows, cols = ctx.plan.process.console_size
                console.set_size(master, rows, cols)
            if dev_console:
                console.mount_console(root, slave)
            console.send_master(ctx.console_fd, master, name)
        finally:
            os.close(master)
        # The terminal belongs to the process's user (runc chowns it too), so that it can
        # change its own tty settings after the user switch.
        os.fchown(slave, ctx.plan.process.uid, ctx.plan.process.gid)
        console.make_controlling(slave)
    finally:
        os.close(root)
    os.close(ctx.console_fd)
    ctx.console_fd = -1


def apply_lsm(plan: Plan) -> None:
    """The AppArmor profile and SELinux label the process runs under (applied by the
    kernel at its execve; create and exec checked beforehand that the host has them)."""
    lsm.apply_exec_labels(plan.process.apparmor, plan.process.selinux_label)


def join_session_keyring(ctx: InitContext) -> None:
    """A fresh session keyring (labelled with the process's SELinux label, as runc does),
    unless --no-new-keyring."""
    if ctx.plan.no_new_keyring:
        return
    if ctx.plan.process.selinux_label:
        lsm.write_attr("keycreate", ctx.plan.process.selinux_label)
    attrs.join_session_keyring(f"_ses.{ctx.container_id}", ctx.in_userns)


def write_sysctls(sysctl: dict[str, str]) -> None:
    """Write sysctls through a private procfs instance that nothing in the container can
    have mounted over (CVE-2025-52881); fall back to the container's /proc, checked to be
    procfs."""
    if not sysctl:
        return
    proc = _private_procfs()
    try:
        for key, value in sysctl.items():
            rel = "sys/" + key.replace(".", "/")
            try:
                if proc >= 0:
                    fd = libc.openat2(proc, rel, os.O_WRONLY | os.O_CLOEXEC, 0,
                                      c.RESOLVE_BENEATH | c.RESOLVE_NO_XDEV
                                      | c.RESOLVE_NO_SYMLINKS)
                else:
                    fd = os.open("/proc/" + rel, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    if libc.fstatfs_type(fd) != c.PROC_SUPER_MAGIC:
                        raise OcirtError(f"sysctl {key}: /proc/{rel} is not on procfs")
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise OcirtError(f"write sysctl {key}={value!r}: "
                                 f"{errno_text(exc.errno or 0)}") from None
    finally:
        if proc >= 0:
            os.close(proc)


def _private_procfs() -> int:
    try:
        fs = libc.fsopen("proc", c.FSOPEN_CLOEXEC)
    except OSError:
        return -1
    try:
        libc.fsconfig(fs, c.FSCONFIG_CMD_CREATE)
        return libc.fsmount(fs, c.FSMOUNT_CLOEXEC, c.MOUNT_ATTR_NOSUID | c.MOUNT_ATTR_NODEV
                            | c.MOUNT_ATTR_NOEXEC)
    except OSError:
        return -1
    finally:
        os.close(fs)


# --- the process -----------------------------------------------------------------------

def prepare_process(ctx: InitContext) -> tuple[str, list[str]]:
    """Everything up to the exec that can still fail with an error `create` reports:
    identity and capabilities, the working directory, and finding the executable."""
    proc = ctx.plan.process
    attrs.set_io_priority(proc.io_priority)
    attrs.set_scheduler(proc.scheduler)
    attrs.set_personality(ctx.plan.personality)
    attrs.set_memory_policy(ctx.plan.memory_policy)
    setgroups_allowed = _setgroups_allowed()
    try:
        os.chdir(proc.cwd)  # as root first; again as the user below (runc)
    except OSError:
        pass
    attrs.set_identity(proc, setgroups_allowed, apply_caps=not _seccomp_needs_caps(ctx))
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise OcirtError(f"chdir to cwd ({proc.cwd!r}) set in config.json failed: "
                         f"{errno_text(exc.errno or 0)}") from None
    check_cwd()
    env = list(proc.env) + ctx.extra_env
    if proc.env_value("HOME") is None:
        env.append("HOME=" + attrs.home_of(proc.uid))
    path = attrs.lookup_path(proc.args[0], proc.env_value("PATH"))
    return path, env


def _seccomp_needs_caps(ctx: InitContext) -> bool:
    """Without no_new_privs, loading a seccomp filter needs CAP_SYS_ADMIN."""
    return ctx.seccomp is not None and not ctx.plan.process.no_new_privs


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def check_cwd() -> None:
    """The working directory must be inside the container: a leaked host directory fd as
    cwd shows up as "(unreachable)" (CVE-2024-21626)."""
    try:
        cwd = os.getcwd()
    except OSError as exc:
        raise OcirtError(f"current working directory is outside of container mount "
                         f"namespace root -- possible container breakout detected: "
                         f"{errno_text(exc.errno or 0)}") from None
    if not cwd.startswith("/"):
        raise OcirtError("current working directory is outside of container mount namespace "
                         "root -- possible container breakout detected")


def wait_for_start(ctx: InitContext) -> None:
    """Block on the exec fifo until `start` writes its byte (see ocirt.runtime.start)."""
    for sig in _FATAL_WHILE_WAITING:
        _signal.signal(sig, _die_of_signal)
    while True:
        try:
            data = os.read(ctx.fifo_fd, 1)
        except InterruptedError:
            continue
        if data:
            break
    for sig in _FATAL_WHILE_WAITING:
        _signal.signal(sig, _signal.SIG_DFL)


def _die_of_signal(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


def exec_process(ctx: InitContext, path: str, env: list[str], tramp: int = -1,
                 wait_fd: int = -1) -> NoReturn:
    """The last steps before the user process: no_new_privs, seccomp, signal state and
    file descriptors, then execve, through the sealed trampoline (`tramp`) when there is
    one (with `wait_fd`, the exec fifo, it waits for `start` first). An exec failure goes
    back to `start` over the fifo (or, for `exec`, to its parent over the sync socket)."""
    proc = ctx.plan.process
    if proc.no_new_privs:
        attrs.set_no_new_privs()
    if proc.cpu_affinity and proc.cpu_affinity[1]:
        attrs.set_affinity(proc.cpu_affinity[1], "final")
    reset_signals()
    for fd in range(3, ctx.keep_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    keep = ctx.fifo_fd
    mark_cloexec_from(ctx.keep_fds)  # before the filter, which may not allow close_range
    if wait_fd >= 0:
        os.set_inheritable(wait_fd, True)  # the trampoline waits on it
    if ctx.seccomp is not None:
        if _seccomp_needs_caps(ctx):
            attrs.raise_effective()
            ctx.seccomp.install(seccomp_state(ctx), ctx.exec_pid or None)
            attrs.apply_capabilities(proc)
        else:
            ctx.seccomp.install(seccomp_state(ctx), ctx.exec_pid or None)
    env_map = _env_dict(env)
    if tramp >= 0:
        try:
            os.execve(tramp, trampoline.argv(wait_fd, path, proc.args), env_map)
        except OSError:
            pass  # executable memfds refused (vm.memfd_noexec, a filter): exec from here
        if wait_fd >= 0:
            os.set_inheritable(wait_fd, False)
            wait_for_start(ctx)
    try:
        os.execve(path, proc.args, env_map)
    except OSError as exc:
        message = f"exec {path}: {errno_text(exc.errno or 0)}"
        try:
            if keep >= 0:  # the container's init: `start` reads the fifo
                os.write(keep, ("E" + message).encode())
            else:  # `exec`: its parent waits on the sync socket
                ctx.channel.send("error", message=message)
        except OSError:
            pass
        os.write(2, f"ocirt: {message}\n".encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)


def seccomp_state(ctx: InitContext) -> dict[str, Any]:
    """The container state a seccomp notify listener receives (runtime-spec): from the
    init "creating" (as runc's init sends it), from an `exec` "running" with the init's
    PID (the exec'd process's own PID goes in the message's `pid`)."""
    p = ctx.plan
    status = "running" if ctx.exec_pid else "creating"
    state: dict[str, Any] = {"ociVersion": p.oci_version, "id": ctx.container_id,
                             "status": status, "pid": ctx.host_pid, "bundle": p.bundle}
    if p.annotations:
        state["annotations"] = p.annotations
    return state


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve, so restore the
    defaults (a shell pipeline in the container depends on SIGPIPE)."""
    for sig in range(1, _signal.NSIG):
        if sig in (9, 19, 32, 33):  # KILL, STOP, and glibc's internal RT signals
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def mark_cloexec_from(first: int) -> None:
    try:
        libc.close_range(first, 0xFFFFFFFF, c.CLOSE_RANGE_CLOEXEC)
    except OSError:
        for fd in range(first, 1024):
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def stderr_write(text: str) -> None:
    try:
        sys.stderr.write(text)
    except (OSError, ValueError):
        pass
