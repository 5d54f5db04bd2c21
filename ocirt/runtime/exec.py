"""`exec`: run a new process inside a created or running container.

The process joins all of the container's namespaces and its cgroup, and gets the
capabilities, rlimits, no_new_privs, seccomp profile and LSM settings of the spec'd
process (a process.json, or the container's own process with the command-line
overrides runc applies). Detached, ocirt writes the host PID and exits (the subreaper
reaps the process); in the foreground it relays stdio or a terminal, forwards signals
and exits with the process's status.
"""

from __future__ import annotations

import errno
import os

from ocirt import log
from ocirt.errors import OcirtError, errno_text
from ocirt.linux import consts
from ocirt.spec.plan import Plan, Process
from ocirt.state import PAUSED, Container, Store, check_transition
from ocirt.undo import Undo

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


class ExecOptions:
    """`exec` flags (runc's names in the comments)."""

    def __init__(self, process_file: str = "", args: list[str] | None = None,
                 tty: bool | None = None, cwd: str = "", env: list[str] | None = None,
                 user: str = "", additional_gids: list[str] | None = None,
                 caps: list[str] | None = None, no_new_privs: bool | None = None,
                 apparmor: str = "", process_label: str = "", detach: bool = False,
                 pid_file: str = "", console_socket: str = "", preserve_fds: int = 0,
                 cgroup: list[str] | None = None, ignore_paused: bool = False) -> None:
        self.process_file = process_file  # --process / -p
        self.args = args or []  # the command line after the container id
        self.tty = tty  # --tty / -t (None: not given)
        self.cwd = cwd  # --cwd
        self.env = env or []  # --env / -e
        self.user = user  # --user / -u  uid[:gid]
        self.additional_gids = additional_gids or []  # --additional-gids / -g
        self.caps = caps or []  # --cap / -c
        self.no_new_privs = no_new_privs  # --no-new-privs (None: not given)
        self.apparmor = apparmor  # --apparmor
        self.process_label = process_label  # --process-label
        self.detach = detach  # --detach / -d
        self.pid_file = pid_file  # --pid-file
        self.console_socket = console_socket  # --console-socket
        self.preserve_fds = preserve_fds  # --preserve-fds
        self.cgroup = cgroup or []  # --cgroup [controller:]path
        self.ignore_paused = ignore_paused  # --ignore-paused


def exec_process(store: Store, cid: str, opts: ExecOptions) -> int:
    """Run the process; returns its exit status (foreground) or 0 (detached)."""
    container = store.load(cid)
    status = container.status()
    if not (status == PAUSED and opts.ignore_paused):
        check_transition("exec", status, cid)
    config = container.config()  # read once: the plan and the process both come from it
    plan = container_plan(container, config)
    plan.process = exec_spec(config, opts)
    from ocirt.runtime.process_setup import check_security_labels, warn_and_keep_grantable

    warn_and_keep_grantable(plan)
    check_security_labels(plan)
    terminal = plan.process.terminal
    if terminal and opts.detach and not opts.console_socket:
        raise OcirtError("cannot allocate tty if ocirt will detach without setting console "
                         "socket")
    if not terminal and opts.console_socket:
        raise OcirtError("cannot use console socket if ocirt will not detach or allocate tty")
    execution = Execution(container, plan, opts)
    execution.paused = status == PAUSED
    if terminal and not opts.console_socket:
        from ocirt.runtime.tty import host_console

        execution.console = host_console()
    execution.store_cache = store.cache_dir("seccomp")
    return execution.run()


def container_plan(container: Container, config: dict[str, Any]) -> Plan:
    from ocirt.spec.plan import build_plan

    return build_plan(config, container.bundle,
                      no_new_keyring=bool(container.data.get("no_new_keyring")))


def exec_spec(config: dict[str, Any], opts: ExecOptions) -> Process:
    """The process to run: a process.json, or the container's process (from its
    config.json, `config`) with runc's command-line overrides."""
    from ocirt.spec.plan import build_caps, build_process

    if opts.process_file:
        from ocirt.spec.load import read_json_file

        raw = read_json_file(opts.process_file, regular_only=False)
        if not isinstance(raw, dict):
            raise OcirtError(f"{opts.process_file}: the process must be a JSON object")
        proc = build_process(_with_container_defaults(raw, config), "process")
        if opts.tty:  # conmon passes --tty with process.terminal; --tty forces a terminal
            proc.terminal = True
        return proc
    if not opts.args:
        raise OcirtError("exec: no command given (and no --process file)")
    _check_utf8(opts)
    raw = dict(config.get("process") or {"cwd": "/"})
    raw["args"] = list(opts.args)
    raw["env"] = list(raw.get("env") or []) + list(opts.env)
    if opts.cwd:
        raw["cwd"] = opts.cwd
    raw["terminal"] = bool(opts.tty)
    if opts.no_new_privs is not None:
        raw["noNewPrivileges"] = opts.no_new_privs
    if opts.apparmor:
        raw["apparmorProfile"] = opts.apparmor
    if opts.process_label:
        raw["selinuxLabel"] = opts.process_label
    user = dict(raw.get("user") or {})
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        user["uid"] = _int(uid, "--user uid")
        if gid:
            user["gid"] = _int(gid, "--user gid")
    if opts.additional_gids:
        user["additionalGids"] = list(user.get("additionalGids") or []) + [
            _int(g, "--additional-gids") for g in opts.additional_gids]
    raw["user"] = user
    raw["capabilities"] = _with_caps(raw.get("capabilities"), opts.caps)
    build_caps({"bounding": opts.caps}, "--cap")  # a typo on the command line: an error
    return build_process(raw, "process")


# What a process.json leaves out comes from config.json, as runc's newInitConfig takes
# the container's values first and lets the process's override them: absent (null)
# values, and for these also empty ones (runc: `len(process.Rlimits) > 0`,
# `process.AppArmorProfile != ""`, `process.Label != ""`). Without this a process.json
# with no "capabilities" would run with every capability the runtime has.
_INHERITED = ("capabilities", "ioPriority", "scheduler", "execCPUAffinity")
_INHERITED_IF_EMPTY = ("rlimits", "apparmorProfile", "selinuxLabel")


def _with_container_defaults(raw: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    config_process = config.get("process") or {}
    out = dict(raw)
    for key in _INHERITED + _INHERITED_IF_EMPTY:
        missing = out.get(key) is None or (key in _INHERITED_IF_EMPTY and not out[key])
        if missing and config_process.get(key) is not None:
            out[key] = config_process[key]
    return out


def _check_utf8(opts: ExecOptions) -> None:
    """Command-line bytes that are not UTF-8 (Python holds them as lone surrogates) can
    cross neither the JSON of the state nor the sync socket: refused, naming the flag."""
    named = [(f"argument {i + 1}", a) for i, a in enumerate(opts.args)]
    named += [("--env", e) for e in opts.env] + [("--cwd", opts.cwd), ("--user", opts.user)]
    for what, value in named:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise OcirtError(f"exec: {what} {os.fsencode(value)!r} is not UTF-8 text") \
                from None


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OcirtError(f"{what}: {text!r} is not a number") from None
    if value < 0:
        raise OcirtError(f"{what}: {value} is negative")
    return value


def _with_caps(caps: dict[str, Any] | None, extra: list[str]) -> dict[str, Any] | None:
    """runc's --cap: added to the bounding, effective and permitted sets, and to the
    ambient set only when the spec has inheritable capabilities; never to the
    inheritable set (CVE-2022-29162)."""
    if not extra:
        return caps
    caps = {k: list(v) for k, v in (caps or {}).items()}
    for cap in extra:
        name = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
        for kind in ("bounding", "effective", "permitted"):
            caps.setdefault(kind, []).append(name)
        if caps.get("inheritable"):
            caps.setdefault("ambient", []).append(name)
    return caps


class Execution:
    """One `exec`, step by step, with its undo stack."""

    def __init__(self, container: Container, plan: Plan, opts: ExecOptions) -> None:
        self.container = container
        self.plan = plan
        self.opts = opts
        self.undo = Undo()
        self.intermediate = 0
        self.pid = 0
        self.paused = False  # --ignore-paused into a frozen cgroup: never born in it
        self.born_in: tuple[str, ...] = ()  # the cgroups the first child was born in
        self.forwarder: Any = None
        self.store_cache: str | None = None
        self.console = -1  # our terminal, relayed to the process's pty (no console socket)
        self.stdio: tuple[int, int, int] | None = None  # the process's 0, 1, 2 if not ours

    def run(self) -> int:
        try:
            return self._run()
        except BaseException:
            self.undo.run()
            raise

    def _run(self) -> int:
        from ocirt.linux import libc
        from ocirt.process import join  # imported before the fork: the child needs it
        from ocirt.process.child import InitContext, run_child
        from ocirt.process.protocol import socketpair
        from ocirt.runtime.process_setup import inherited_fds

        plan = self.plan
        keep_fds, extra_env = inherited_fds(self.opts.preserve_fds)
        seccomp = None
        if plan.seccomp is not None:
            from ocirt.seccomp import compile_filter

            seccomp = compile_filter(plan.seccomp, self.store_cache)
        ns_fds = self._namespace_fds()
        root_fd = os.open(f"/proc/{self.container.pid}/root", os.O_PATH | os.O_CLOEXEC)
        self.undo.push(os.close, root_fd, what="root fd")
        relay_end = -1
        console_fd = -1
        if plan.process.terminal:
            if self.opts.console_socket:
                from ocirt.fs.console import connect_socket

                console_fd = connect_socket(self.opts.console_socket)
            else:
                from ocirt.runtime.foreground import socketpair as stream_pair

                relay_end, console_fd = stream_pair()
                self.undo.push(os.close, relay_end, what="terminal socket")
        parent, child = socketpair()
        self.undo.push(parent.close, what="sync socket")
        ctx = InitContext(plan, self.container.id, child, -1, console_fd, ns_fds, keep_fds,
                          extra_env, seccomp, None)
        ctx.root_fd = root_fd
        ctx.host_pid = self.container.pid
        libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)
        from ocirt.cgroups import fork_in_cgroups

        direct, own_pid_ns = _enter_pid_namespace(ns_fds)
        birth = None
        try:
            birth = self._birth() if direct else None
            ctx.cgroup_tasks = birth.tasks() if birth else []
            pid, self.born_in = fork_in_cgroups(birth)
            if pid == 0:
                parent.close()
                if self.stdio is not None:
                    for target, fd in enumerate(self.stdio):
                        os.dup2(fd, target, inheritable=True)
                run_child(join.direct if direct else join.intermediate, ctx)
            if direct:
                self.pid = pid
            else:
                self.intermediate = pid
            self.undo.push(self._kill_children, what="exec processes")
        finally:
            if birth:
                birth.close()
            if own_pid_ns >= 0:  # our next children are ours again (hooks, poststart)
                _leave_pid_namespace(own_pid_ns)
        if birth:
            log.debug(f"the process is born in its cgroups: {birth.summary(self.born_in)}")
        child.close()
        for fd in (*ns_fds.values(), console_fd):
            if fd >= 0:
                os.close(fd)
        self._handshake(parent)
        self.undo.clear()
        os.close(root_fd)
        if self.opts.pid_file:
            from ocirt.runtime.process_setup import write_pid_file

            write_pid_file(self.opts.pid_file, self.pid)
        if self.opts.detach:
            if relay_end >= 0:
                os.close(relay_end)
            return 0
        return self._foreground(relay_end)

    def _namespace_fds(self) -> dict[str, int]:
        """fds of the init's namespaces, for every namespace the container has."""
        fds: dict[str, int] = {}
        try:
            for kind in self.plan.namespaces:
                name = consts.NAMESPACES[kind][1]
                fds[kind] = os.open(f"/proc/{self.container.pid}/ns/{name}",
                                    os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            for fd in fds.values():
                os.close(fd)
            raise OcirtError(f"open the container's {kind} namespace: "
                             f"{errno_text(exc.errno or 0)}") from None
        return fds

    def _birth(self) -> Any:
        """What lets the process, forked straight into the container's pid namespace,
        be born inside the container's cgroups (cgroups.Birth), so that `exec` never
        waits for a cgroup.procs write (~15 ms: an RCU grace period). Not for an
        intermediate: it forks the process once in, and a full pids.max would refuse
        that fork, where moving a process in is never refused. None where it is moved
        in instead: --cgroup (a sub-cgroup, or controllers named one by one), a paused
        container (a child born frozen would never answer), and an
        execCPUAffinity.initial (it applies before the process enters the cgroup, whose
        cpuset may not allow it)."""
        cg = self.container.data.get("cgroup")
        affinity = self.plan.process.cpu_affinity
        if not cg or self.opts.cgroup or self.paused or (affinity and affinity[0]):
            return None
        from ocirt.cgroups import birth_from_state

        return birth_from_state(cg)

    def _join_cgroup(self, pid: int) -> None:
        """The container's cgroup, and its resctrl group (exec'd processes are not the
        init's children, so they do not inherit it)."""
        rdt = self.container.data.get("intel_rdt")
        if rdt:
            from ocirt import resctrl

            resctrl.join(rdt, pid)
        cg = self.container.data.get("cgroup")
        if not cg:
            return
        if not self.opts.cgroup:
            from ocirt.cgroups import join_from_state

            join_from_state(cg, pid, skip=self.born_in)
            return
        from ocirt.cgroups import manager_from_state

        manager = manager_from_state(cg)
        if hasattr(manager, "add_to_sub"):
            manager.add_to_sub(pid, self.opts.cgroup)
        else:
            manager.add(pid)

    def _handshake(self, parent: Any) -> None:
        from ocirt.process import attrs

        proc = self.plan.process
        if self.intermediate:
            parent.send("go")
            msg, _ = parent.expect("exec-pid", on_log=log.emit_from_child)
            self.pid = int(msg["pid"])
            self._join_cgroup(self.pid)  # nothing of the process's runs before "ready-ack"
        else:  # forked by us, in the container's pid namespace: in its cgroup before "go"
            self._join_cgroup(self.pid)
            parent.send("go")
        if not self.opts.detach:  # from here on, our signals are the process's
            from ocirt.runtime.foreground import SignalForwarder

            self.forwarder = SignalForwarder(self.pid, -1)
        if self.intermediate:
            _, status = os.waitpid(self.intermediate, 0)
            self.intermediate = 0
            if status != 0:
                raise OcirtError(f"exec intermediate process failed (wait status {status})")
        parent.expect("ready", on_log=log.emit_from_child)
        attrs.set_final_affinity(self.pid, proc)  # it is in the cgroup by now
        if proc.rlimits:
            attrs.set_rlimits(self.pid, proc.rlimits)
        if proc.oom_score_adj is not None:
            attrs.set_oom_score_adj(self.pid, proc.oom_score_adj)
        parent.send("ready-ack", pid=self.pid)
        from ocirt.process.protocol import wait_closed

        wait_closed(parent, on_log=log.emit_from_child)
        parent.close()

    def _foreground(self, relay_end: int) -> int:
        from ocirt.runtime.foreground import receive_master, wait_and_relay

        master = -1
        try:
            if relay_end >= 0:
                master = receive_master(relay_end)
                self.forwarder.attach_terminal(master, self.console)
            return wait_and_relay(self.pid, master, self.forwarder)
        finally:
            if relay_end >= 0:
                os.close(relay_end)

    def _kill_children(self) -> None:
        from ocirt.linux.signals import kill_and_reap

        kill_and_reap(self.pid, self.intermediate)


def _enter_pid_namespace(ns_fds: dict[str, int]) -> tuple[bool, int]:
    """Join the container's pid namespace for our next child only, so that the process
    is forked straight into it, without an intermediate (one fork of this interpreter
    less per exec: ~2 ms of CPU). Returns (direct, fd of our own pid namespace to come
    back to, or -1). Not direct with a time namespace (it, too, applies only to
    children: the intermediate joins it), nor where the kernel refuses us the pid
    namespace (EPERM: no CAP_SYS_ADMIN in our own user namespace, a rootless runtime
    that must join the container's user namespace first)."""
    if "time" in ns_fds:
        return False, -1
    fd = ns_fds.get("pid")
    if fd is None:  # the host's pid namespace: any fork of ours is in it
        return True, -1
    from ocirt.linux import libc

    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(fd, consts.CLONE_NEWPID, "pid")
    except OSError as exc:
        os.close(own)
        if exc.errno == errno.EPERM:
            return False, -1
        raise OcirtError(f"join the container's pid namespace: "
                         f"{errno_text(exc.errno or 0)}") from None
    del ns_fds["pid"]  # joined: the child has nothing to do with it
    os.close(fd)
    return True, own


def _leave_pid_namespace(own: int) -> None:
    from ocirt.linux import libc

    try:
        libc.setns(own, consts.CLONE_NEWPID, "pid")
    except OSError as exc:
        raise OcirtError(f"return to our own pid namespace: "
                         f"{errno_text(exc.errno or 0)}") from None
    finally:
        os.close(own)


def run_hook_inside(container: Container, kind: str, index: int, hook: dict[str, Any],
                    state_json: str, cache_dir: str | None = None) -> None:
    """Run a hook inside the container, as its process would run (namespaces, root,
    cgroup, identity, capabilities, seccomp, LSM), with the state on stdin: runc runs
    startContainer hooks from its sealed init; ocirt's init is the sealed trampoline by
    then (no host interpreter waits in the container), so `start` joins the container
    for them. Raises HookError with runc's wording when the hook fails."""
    import select

    from ocirt.hooks import HookError, failure
    from ocirt.spec.plan import build_process

    config = container.config()
    plan = container_plan(container, config)
    raw = dict(config.get("process") or {"cwd": "/"})
    raw.update(args=list(hook.get("args") or [hook["path"]]), env=list(hook.get("env") or []),
               terminal=False)
    plan.process = build_process(raw, "process")
    plan.process.executable = hook["path"]
    stdio = [os.memfd_create(f"ocirt-hook-{n}", os.MFD_CLOEXEC) for n in ("in", "out", "err")]
    try:
        os.write(stdio[0], state_json.encode())
        os.lseek(stdio[0], 0, os.SEEK_SET)
        execution = Execution(container, plan, ExecOptions(detach=True))
        execution.stdio = (stdio[0], stdio[1], stdio[2])
        execution.store_cache = cache_dir
        where = f"error running {kind} hook #{index} ({hook['path']})"
        try:
            execution.run()
        except OcirtError as exc:
            raise HookError(f"{where}: {exc.message}") from None
        pidfd = os.pidfd_open(execution.pid)
        try:
            timeout = hook.get("timeout")
            if not select.select([pidfd], [], [], timeout)[0]:
                from ocirt.linux.signals import kill_and_reap

                kill_and_reap(execution.pid, 0)
                raise HookError(f"{where}: hook ran past specified timeout of {timeout}s")
        finally:
            os.close(pidfd)
        _, status = os.waitpid(execution.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            out, err = (_read_all(fd) for fd in stdio[1:])
            raise HookError(failure(where, code, out, err))
    finally:
        for fd in stdio:
            os.close(fd)


def _read_all(fd: int) -> bytes:
    from ocirt.linux.files import read_to_end

    os.lseek(fd, 0, os.SEEK_SET)
    return read_to_end(fd)
