"""Driving the criu(8) binary for `checkpoint` and `restore`: finding and checking it,
the options both commands share, and running it with its error brought back in one line.

ocirt uses CRIU's command line rather than its RPC (`criu swrk`): the options map one to
one onto runc's RPC fields, and the log CRIU writes is the same. What runc's libcontainer
adds around CRIU (external bind mounts, namespaces, cgroups, stdio) lives in
`ocirt.runtime.checkpoint` and `ocirt.runtime.restore`.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError
from ocirt.linux.files import read_to_end

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DESCRIPTORS = "descriptors.json"  # the init's stdio as the host saw it (runc's file name)
CGROUP_MODES = ("soft", "full", "strict", "ignore")
EMPTY_NS = {"network": "net"}  # runc accepts only the network namespace for --empty-ns


class CriuOptions:
    """The flags of `checkpoint` and `restore`, as runc spells them in the comments."""

    def __init__(self) -> None:
        self.binary = "criu"  # global --criu
        self.image_path = ""  # --image-path (default: ./checkpoint)
        self.work_path = ""  # --work-path (default: the image path)
        self.parent_path = ""  # --parent-path, relative to the image path
        self.leave_running = False  # --leave-running
        self.tcp_established = False  # --tcp-established
        self.ext_unix_sk = False  # --ext-unix-sk
        self.shell_job = False  # --shell-job
        self.file_locks = False  # --file-locks
        self.pre_dump = False  # --pre-dump
        self.manage_cgroups_mode = ""  # --manage-cgroups-mode (default soft)
        self.empty_ns: list[str] = []  # --empty-ns (network is always empty, as in runc)
        self.auto_dedup = False  # --auto-dedup
        self.lsm_profile = ""  # restore --lsm-profile TYPE:NAME
        self.lsm_mount_context = ""  # restore --lsm-mount-context
        self.lazy_pages = False  # --lazy-pages: memory goes over userfaultfd, on demand
        self.page_server = ""  # checkpoint --page-server ADDRESS:PORT
        self.status_fd = -1  # checkpoint --status-fd: CRIU writes \0 once lazy-pages is ready

    def check(self) -> None:
        """Flag values a user gives, refused before anything runs (runc's messages)."""
        if self.manage_cgroups_mode and self.manage_cgroups_mode not in CGROUP_MODES:
            raise OcirtError("invalid --manage-cgroups-mode value: "
                             f"{self.manage_cgroups_mode} (soft|full|strict|ignore)")
        for ns in self.empty_ns:
            if ns not in EMPTY_NS:
                raise OcirtError(f'namespace "{ns}" is not supported')
        if self.parent_path and os.path.isabs(self.parent_path):
            raise OcirtError("--parent-path must be relative")
        if self.page_server:
            self.page_server_address()
        if self.lazy_pages and self.status_fd != -1:
            _check_status_fd(self.status_fd)

    def page_server_address(self) -> tuple[str, str]:
        """--page-server ADDRESS:PORT split (runc's messages; [v6]:PORT as Go splits it)."""
        host, sep, port = self.page_server.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port:
            raise OcirtError("Use --page-server ADDRESS:PORT to specify page server")
        if not port.isdigit():
            raise OcirtError("Invalid port number")
        return host, port

    def dump_args(self) -> list[str]:
        """A dump's page-server words: with --lazy-pages CRIU serves the pages itself
        (at --page-server, once ready it writes \\0 to --status-fd, and it returns when
        the restore side has taken every page); without, it sends them to a `criu
        page-server` there."""
        args: list[str] = []
        if self.page_server:
            host, port = self.page_server_address()
            args += ([] if self.lazy_pages else ["--page-server"]) + [
                "--address", host, "--port", port]
        if self.lazy_pages and self.status_fd != -1:
            args += ["--status-fd", str(self.status_fd)]
        return args

    def images(self) -> str:
        return os.path.abspath(self.image_path or "checkpoint")

    def work(self) -> str:
        return os.path.abspath(self.work_path) if self.work_path else self.images()

    def common_args(self) -> list[str]:
        """What dump and restore share: directories, log, cgroup mode, behaviour flags."""
        args = ["-D", self.images(), "-v4", "--manage-cgroups=" + (
            self.manage_cgroups_mode or "soft"), "--empty-ns", "net"]
        if self.work_path:
            args += ["-W", self.work()]
        for flag, on in (("--tcp-established", self.tcp_established),
                         ("--ext-unix-sk", self.ext_unix_sk), ("--shell-job", self.shell_job),
                         ("--file-locks", self.file_locks), ("--auto-dedup", self.auto_dedup),
                         ("--lazy-pages", self.lazy_pages)):
            if on:
                args.append(flag)
        for flag, value in (("--lsm-profile", self.lsm_profile),
                            ("--lsm-mount-context", self.lsm_mount_context)):
            if value:
                args += [flag, value]
        return args


def _check_status_fd(fd: int) -> None:
    """The --status-fd descriptor is open and can be written (runc's messages)."""
    import fcntl

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise OcirtError(f"invalid --status-fd argument {fd}: "
                         f"{os.strerror(exc.errno or 0).lower()}") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise OcirtError(f"invalid --status-fd argument {fd}: not writable")


def check_lazy_pages(path: str) -> None:
    """CRIU's own answer on whether lazy pages work here (userfaultfd, non-cooperative:
    the kernel and its vm.unprivileged_userfaultfd / CRIU's build), asked before the
    dump or restore so the refusal is one line and nothing has changed."""
    rc, out = _run_quiet([path, "check", "--feature", "uffd-noncoop"])
    if rc != 0:
        raise OcirtError("--lazy-pages: this CRIU cannot use userfaultfd here (criu check "
                         f"--feature uffd-noncoop: {_first_error(out) or out.strip()[:200]})")


def find(binary: str) -> str:
    """The criu program (the global --criu), checked to work on this kernel: `criu check`
    fails on kernels this CRIU does not know, and saying so beats a failed dump."""
    import shutil

    path = shutil.which(binary) if "/" not in binary else binary
    if not path or not os.access(path, os.X_OK):
        raise OcirtError(f"criu binary {binary!r} not found: checkpoint/restore needs CRIU "
                         "(install the criu package, or give its path with --criu)")
    rc, out = _run_quiet([path, "check"])
    if rc != 0:
        raise OcirtError(f"criu check failed: {_first_error(out) or 'exit status ' + str(rc)}"
                         " (this CRIU cannot checkpoint or restore on this kernel)")
    return path


def _run_quiet(argv: list[str]) -> tuple[int, str]:
    import subprocess

    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return 1, str(exc)
    return done.returncode, done.stdout.decode(errors="replace")


def _first_error(text: str) -> str:
    """CRIU's first `Error (file:line): message` line, the message only."""
    for line in text.splitlines():
        if "Error (" in line and "):" in line:
            return line.split("):", 1)[1].strip()
    return ""


def run(path: str, action: str, args: list[str], log_dir: str, log_name: str,
        pass_fds: tuple[int, ...] = (), preexec: Callable[[], None] | None = None,
        inherit_stdio: bool = False,
        started: Callable[[int], list[str]] | None = None, rpc: bool = False,
        notify: Callable[[str, list[int]], None] | None = None) -> int:
    """`criu ACTION ARGS -o LOG`; a failure raises one line: CRIU's first error and where
    the whole log is (runc quotes the log the same way).

    CRIU is forked and held at a gate until `started(pid)` has run: a restore puts it in
    the container's cgroup there (runc's criuApplyCgroups), so every task it forks starts
    inside, whatever the cgroup manager (systemd's needs a process to make its unit).
    The arguments `started` returns are added then (a systemd unit's cgroup is known only
    once CRIU is in it). A restore passes our stdio on (`inherit_stdio`): they become
    the restored init's. With `rpc` the same words go over CRIU's RPC (`criu swrk`,
    ocirt.runtime.criu_rpc) instead, `notify(script, fds)` hears CRIU's notifications,
    and the pid CRIU reports comes back (0 from the command line)."""
    log = os.path.join(log_dir, log_name)
    session = opts = None
    if rpc:
        from ocirt.runtime import criu_rpc

        opts = criu_rpc.Options(args, log_name, log_dir)  # refuses early what RPC can't say
        session = criu_rpc.Session()
        argv = session.argv(path)
        pass_fds = (*pass_fds, session.child)
    else:
        argv = [path, action, *args, "-o", log_name]
    try:
        return _run(argv, action, log, pass_fds, preexec, inherit_stdio, started,
                    session, opts, notify)
    finally:
        if session is not None:
            session.close()
        if opts is not None:
            opts.close()


def _run(argv: list[str], action: str, log: str, pass_fds: tuple[int, ...],
         preexec: Callable[[], None] | None, inherit_stdio: bool,
         started: Callable[[int], list[str]] | None, session: Any, opts: Any,
         notify: Callable[[str, list[int]], None] | None) -> int:
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)  # CRIU's exec closes it; a failure writes
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(error_r)
        _child(gate_r, gate_w, error_w, argv, pass_fds, preexec, inherit_stdio)
    os.close(gate_r)
    os.close(error_w)
    if session is not None:
        session.close_child()
    try:
        extra = started(pid) if started is not None else []
        if opts is not None:
            opts.add(extra)
            extra = []
        _write_all(gate_w, b"g" + "\0".join(extra).encode())
    except BaseException:
        from ocirt.linux.signals import kill_and_reap

        kill_and_reap(pid)
        os.close(error_r)
        raise
    finally:
        os.close(gate_w)
    try:
        setup_error = read_to_end(error_r).decode(errors="replace").strip()
    finally:
        os.close(error_r)
    got, failure = 0, None
    if session is not None:
        try:
            if not setup_error:
                got, failure = _converse(session, action, opts, notify)
        except OcirtError:  # our side of a notification (the console socket) failed
            session.close()
            _wait(pid)
            raise
        session.close()  # CRIU never waits on us past here
    status = _wait(pid)
    if setup_error:
        raise OcirtError(f"cannot run criu {action}: {setup_error}")
    if failure is not None or status != 0:
        raise OcirtError(f"criu failed: {action}: "
                         f"{log_error(log) or failure or _status_text(status)} "
                         f"(log file: {log})")
    return got


def _converse(session: Any, action: str, opts: Any,
              notify: Callable[[str, list[int]], None] | None) -> tuple[int, str | None]:
    """The request and its answer: (pid, None), or (0, why) when CRIU failed; why is
    "" when CRIU said nothing of its own (its log's first error says it then)."""
    from ocirt.runtime import criu_rpc

    try:
        return session.request(action, opts, notify), None
    except criu_rpc.Failed as exc:
        return 0, str(exc)
    except OSError as exc:  # CRIU hung up mid-way
        return 0, "" if exc.errno in (32, 104) else str(exc)


def _child(gate_r: int, gate_w: int, error_w: int, argv: list[str],
           pass_fds: tuple[int, ...], preexec: Callable[[], None] | None,
           inherit_stdio: bool) -> None:
    """CRIU's side of the fork: wait at the gate, set up, exec; any failure exits 127
    with its reason on `error_w`, which the parent turns into its one line."""
    code = 127
    try:
        os.close(gate_w)
        message = read_to_end(gate_r)
        if not message.startswith(b"g"):
            os._exit(code)  # the parent gave up
        if len(message) > 1:
            argv = [*argv[:2], *message[1:].decode().split("\0"), *argv[2:]]
        if not inherit_stdio:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(null, fd)
            os.close(null)
        keep = sorted(set(pass_fds))
        for fd in keep:
            os.set_inheritable(fd, True)
        low = 3
        for fd in [*sorted({*keep, error_w}), 1 << 20]:
            if fd > low:
                os.closerange(low, min(fd, _max_fd()))
            low = max(low, fd + 1)
        if preexec is not None:
            preexec()
        os.execv(argv[0], argv)
    except BaseException as exc:  # noqa: BLE001 - the child must never return
        try:
            os.write(error_w, str(exc).encode())
        except OSError:
            pass
    os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _max_fd() -> int:
    import resource

    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)


def _status_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def log_error(log: str) -> str:
    try:
        with open(log, errors="replace") as f:
            return _first_error(f.read())
    except OSError:
        return ""


def descriptors(pid: int) -> list[str]:
    """What the init's fds 0-2 are, as readlink shows them (`pipe:[123]`, `/dev/null`):
    a restore hands new pipes in their place (--inherit-fd), as runc does."""
    out = []
    for fd in range(3):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            out.append("/dev/null")
    return out


def ext_mounts(plan: Any) -> list[str]:
    """The container's bind mounts, by destination: CRIU cannot dump a mount whose source
    lies outside the container, so each is named external (runc's ExtMnt list)."""
    return [m.destination for m in plan.mounts if m.is_bind]


def cgroup_roots(paths: dict[str, str]) -> list[str]:
    """`--cgroup-root` values: each of the container's cgroup directories, relative to
    the root of its hierarchy ("" is cgroup2; a v1 key is its controllers)."""
    from ocirt.linux.mountinfo import mounts

    tops = [m for m in mounts() if m.fstype in ("cgroup", "cgroup2")]
    out = []
    for ctrl, directory in paths.items():
        best = max((m for m in tops if directory == m.mountpoint
                    or directory.startswith(m.mountpoint.rstrip("/") + "/")),
                   key=lambda m: len(m.mountpoint), default=None)
        if best is None:
            continue
        rel = "/" + directory[len(best.mountpoint):].strip("/")
        rel = os.path.normpath(best.root.rstrip("/") + rel) if best.root != "/" else rel
        out.append(f"{ctrl}:{rel}" if ctrl else rel)
    return out
