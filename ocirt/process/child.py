"""What every forked container process runs, in `create` (ocirt.process.init) and in
`exec` (ocirt.process.join): its context, error reports to the parent, non-dumpable
until execve, fd hygiene, the terminal, LSM labels and session keyring, the process's
identity and capabilities, and the exec of the sealed trampoline.

Nothing here may import a module lazily: after pivot_root (or an exec's chroot) the
host's Python files are out of reach, so every module this code needs is imported at
the top of this file. A module apart from the init's own stages so that `exec` loads
none of the root filesystem and device code (ocirt.fs.rootfs, ocirt.fs.devices).
"""

from __future__ import annotations

import _signal
import os

from ocirt.errors import OcirtError, errno_text, os_error_text
from ocirt.fs import console, resolve
from ocirt.linux import consts as c
from ocirt.linux import libc, lsm
from ocirt.process import attrs, trampoline

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ocirt.process.protocol import Channel
    from ocirt.spec.plan import Plan


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
        self.cgroup_tasks: list[tuple[str, int]] = []  # the intermediate: v1 cgroups
        # to join, with their `tasks` files open


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


def join_own_cgroups(ctx: InitContext) -> None:
    """Move ourselves into the container's cgroup v1 directories (`create` or `exec`
    opened their `tasks` files: cgroups.Birth), while we are single-threaded and still
    in the host's namespaces: a thread writing "0" takes no global lock, where the
    runtime writing our PID to cgroup.procs would wait for an RCU grace period. Whatever
    fails ends the create or exec."""
    tasks, ctx.cgroup_tasks = ctx.cgroup_tasks, []
    try:
        for directory, fd in tasks:
            try:
                os.write(fd, b"0")
            except OSError as exc:
                raise OcirtError(f"join cgroup {directory}: "
                                 f"{errno_text(exc.errno or 0)}") from None
    finally:
        for _, fd in tasks:
            os.close(fd)


def make_non_dumpable() -> None:
    """Nothing in the container may ptrace us, read our memory or our fds until the
    execve (CVE-2016-9962). Checked, and fatal when it cannot be had (fail closed)."""
    try:
        libc.prctl(c.PR_SET_DUMPABLE, 0)
        dumpable = libc.prctl(c.PR_GET_DUMPABLE)
    except OSError as exc:
        dumpable = -(exc.errno or 1)
    if dumpable != 0:
        why = errno_text(-dumpable) if dumpable < 0 else "still dumpable"
        raise OcirtError(f"cannot make the container's setup processes non-dumpable (prctl "
                         f"PR_SET_DUMPABLE: {why}): the container could ptrace them "
                         "before they exec (CVE-2016-9962)")


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


def join_session_keyring(ctx: InitContext, init: bool = True) -> None:
    """The container's session keyring `_ses.<id>` (labelled with the process's SELinux
    label, as runc does), unless --no-new-keyring: the init creates it, `exec` joins it."""
    if ctx.plan.no_new_keyring:
        return
    if ctx.plan.process.selinux_label:
        lsm.write_attr("keycreate", ctx.plan.process.selinux_label)
    attrs.join_session_keyring(f"_ses.{ctx.container_id}", ctx.in_userns, set_perm=init)


def prepare_process(ctx: InitContext) -> tuple[str, list[str]]:
    """Everything up to the exec that can still fail with an error `create` reports:
    identity and capabilities, the working directory, and finding the executable."""
    proc = ctx.plan.process
    attrs.set_io_priority(proc.io_priority)
    cpu = (ctx.plan.resources or {}).get("cpu") or {}
    attrs.set_scheduler(proc.scheduler, bool(isinstance(cpu, dict) and cpu.get("cpus")))
    attrs.set_personality(ctx.plan.personality)
    attrs.set_memory_policy(ctx.plan.memory_policy)
    setgroups_allowed = _setgroups_allowed()
    try:
        os.chdir(proc.cwd)  # as root first; again as the user below (runc)
    except OSError:
        pass
    attrs.set_identity(proc, setgroups_allowed, apply_caps=not _seccomp_needs_caps(ctx))
    make_non_dumpable()  # a credential change makes us dumpable if fs.suid_dumpable is 1
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise OcirtError(f"chdir to cwd ({proc.cwd!r}) set in config.json failed: "
                         f"{errno_text(exc.errno or 0)}") from None
    check_cwd()
    env = list(proc.env) + ctx.extra_env
    if proc.env_value("HOME") is None and not proc.executable:  # a hook: its env as given
        env.append("HOME=" + attrs.home_of(proc.uid))
    path = attrs.lookup_path(proc.executable or proc.args[0], proc.env_value("PATH"))
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


def exec_process(ctx: InitContext, path: str, env: list[str], tramp: int,
                 wait_fd: int = -1, args: list[str] | None = None) -> NoReturn:
    """The last steps before the user process: no_new_privs, seccomp, signal state and
    file descriptors, then the execve of the sealed trampoline (`tramp`), which (with
    `wait_fd`, the exec fifo, waiting for `start` first) execs `path`. Its exec failure
    goes back to `start` over the fifo (for `exec`: EOF without a running process);
    when the trampoline itself cannot run, TrampolineError is raised."""
    proc = ctx.plan.process
    args = proc.args if args is None else args
    if proc.no_new_privs:
        attrs.set_no_new_privs()
    reset_signals()
    for fd in range(3, ctx.keep_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
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
    # Only through the trampoline: exec'ing `path` from here would make the host
    # interpreter the process's /proc/self/exe at execve (CVE-2019-5736). It returns
    # only with the reason it cannot run, which our caller reports.
    trampoline.execve(tramp, trampoline.argv(wait_fd, path, args), _env_dict(env))


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
