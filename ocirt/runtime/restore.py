"""`restore`: a new container, of the bundle's config, from a CRIU checkpoint (runc's
`restore`: create and start in one, the tasks coming from the images, not from execve).

Steps, each with its undo (a failed restore leaves no state directory, cgroup, mount or
process behind): claim the state directory, make the cgroup from the config and put CRIU
in it (the restored tasks are forked by CRIU, and `--cgroup-root` maps the dumped cgroup
onto ours), create the mount points of the bind mounts in the rootfs, then run
`criu restore` in a mount namespace of its own where the rootfs is bound on
`<state>/criu-root` (CRIU's root must be a mount point; the bind vanishes with that
namespace, so no mount is left on the host). Bind mounts come back from the config's
sources (--external), pipes on the init's stdio are replaced by ours (--inherit-fd), a
namespace the config names by path is joined again. A container with a terminal is
restored over CRIU's RPC (ocirt.runtime.criu_rpc): CRIU makes a new pty pair in the
container's devpts and hands the master over, and it goes to --console-socket.
"""

from __future__ import annotations

import os

from ocirt import jsonio
from ocirt.errors import OcirtError, errno_text
from ocirt.linux import proc
from ocirt.runtime import criu
from ocirt.state import CONFIG_FILE, Container, Store, rfc3339_nano, write_atomic
from ocirt.undo import Undo

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

    from ocirt.runtime.create import CreateOptions
    from ocirt.spec.plan import Plan

_NS_KEYS = {"network": ("net", "extRootNetNS"), "pid": ("pid", "extRootPidNS")}
_JOIN_NS = {"uts": "uts", "ipc": "ipc", "user": "user", "cgroup": "cgroup", "time": "time"}


def restore(store: Store, cid: str, copts: CreateOptions, opts: criu.CriuOptions,
            detach: bool, no_subreaper: bool, sif: str = "") -> int:
    """Restore container `cid` (from the newest checkpoint in `sif`, when given); in the
    foreground wait for it and return its exit code."""
    from ocirt.state import validate_id

    validate_id(cid)
    opts.check()
    scratch = ""
    try:
        if sif:
            scratch = _scratch_dir(store, cid)
            plan, spec = _from_sif(sif, scratch, copts)
            opts.image_path = scratch
        else:
            from ocirt.runtime.create import load_plan

            plan, spec = load_plan(copts.bundle, copts)
        container = _restore(store, cid, plan, spec, copts, opts, detach, no_subreaper)
    finally:
        if scratch:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    if detach:
        return 0
    return _wait_and_delete(store, container)


def _restore(store: Store, cid: str, plan: Plan, spec: dict[str, Any], copts: CreateOptions,
             opts: criu.CriuOptions, detach: bool, no_subreaper: bool) -> Container:
    if plan.sif_root:
        raise OcirtError("restore: a root.path naming a SIF image is not supported "
                         "(use `sif bundle` to make a bundle first)")
    from ocirt.runtime.create import check_terminal

    check_terminal(plan, copts)  # a terminal needs --console-socket, as for create
    if not os.path.isdir(plan.rootfs):
        raise OcirtError(f"rootfs ({plan.rootfs}) does not exist")
    descriptors = _descriptors(opts.images())
    binary = criu.find(opts.binary)
    if opts.lazy_pages:
        criu.check_lazy_pages(binary)
    if not detach and not no_subreaper:
        from ocirt.linux import consts, libc

        libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)  # the restored init becomes our child
    return Restoration(store, cid, plan, spec, copts, opts, binary, descriptors).run()


def _from_sif(sif: str, scratch: str, copts: CreateOptions) -> tuple[Plan, dict[str, Any]]:
    """The checkpoint's images into `scratch` (verified first when keys or a policy say
    so) and the plan of its config.json, whose root and mount sources are read relative
    to the --bundle directory as usual."""
    from ocirt.runtime import image
    from ocirt.sif import checkpoint as sifcp
    from ocirt.spec.load import load_config, resolve_bundle
    from ocirt.spec.plan import build_plan

    bundle = resolve_bundle(copts.bundle)
    checked_by = image.policy(copts.sif_keys, copts.sif_pgp_keys)
    image.warn_unverified(sif, checked_by)
    config, _ = sifcp.extract(sif, scratch, checked_by)
    meta = os.path.join(scratch, "@config")
    os.mkdir(meta, 0o700)
    write_atomic(os.path.join(meta, CONFIG_FILE), config, 0o600)
    spec = load_config(meta)
    return build_plan(spec, bundle, no_pivot=copts.no_pivot), spec


def _scratch_dir(store: Store, cid: str) -> str:
    import tempfile

    top = store.private_dir("restore")
    os.makedirs(top, 0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=cid + "-", dir=top)


def _descriptors(images: str) -> list[str]:
    path = os.path.join(images, criu.DESCRIPTORS)
    try:
        with open(path, "rb") as f:
            data = jsonio.loads(f.read())
    except FileNotFoundError:
        raise OcirtError(f"restore: {images} holds no checkpoint (no {criu.DESCRIPTORS})"
                         ) from None
    except (OSError, ValueError) as exc:
        raise OcirtError(f"restore: {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise OcirtError(f"restore: {path}: not a list of strings")
    return data


class Restoration:
    """One `restore`, step by step, with its undo stack."""

    def __init__(self, store: Store, cid: str, plan: Plan, spec: dict[str, Any],
                 copts: CreateOptions, opts: criu.CriuOptions, binary: str,
                 descriptors: list[str]) -> None:
        self.store, self.cid, self.plan, self.spec = store, cid, plan, spec
        self.copts, self.opts, self.binary = copts, opts, binary
        self.descriptors = descriptors
        self.undo = Undo()
        self.fds: list[int] = []

    def run(self) -> Container:
        lock = self.store.claim(self.cid)
        try:
            self.undo.push(self.store.remove, self.cid, what="state directory")
            return self._restore()
        except BaseException:
            self.undo.run()
            raise
        finally:
            for fd in self.fds:
                os.close(fd)
            lock.close()

    def _restore(self) -> Container:
        from ocirt.cgroups import manager_for_plan

        plan, me = self.plan, os.getpid()
        container = Container(self.cid, self.store.dir(self.cid), {
            "ociVersion": plan.oci_version, "id": self.cid, "pid": 0, "bundle": plan.bundle,
            "rootfs": plan.rootfs, "created": rfc3339_nano(_now_ns()),
            "annotations": plan.annotations, "creating": True,
            "creator": [me, proc.start_time(me)],
        })
        self.store.save(container)
        write_atomic(container.path(CONFIG_FILE), jsonio.dumps(self.spec).encode())
        cg = manager_for_plan(plan, self.cid, systemd=self.copts.systemd_cgroup,
                              rootless=self.copts.rootless)
        container.data["cgroup"] = cg.planned_state()
        self.store.save(container)
        self.undo.push(cg.destroy, what="cgroup")
        cg.create()
        container.data["cgroup"] = cg.state()
        self.store.save(container)
        create_mountpoints(plan)
        root = container.path("criu-root")
        os.mkdir(root, 0o755)
        self.undo.push(os.rmdir, root, what="criu root")
        pidfile = container.path("criu.pid")
        self.undo.push(_unlink, pidfile, what="criu pid file")
        args = ["-d", "--pidfile", pidfile, "--root", root, "--evasive-devices",
                *self.opts.common_args(), *self._mounts(), *self._stdio(),
                *self._namespaces()]

        def started(pid: int) -> list[str]:  # CRIU, at its gate: into the container's cgroup
            cg.add(pid)
            cg.apply(plan.resources)
            container.data["cgroup"] = cg.state()
            self.store.save(container)
            out = []
            for value in criu.cgroup_roots(cg.paths()):
                out += ["--cgroup-root", value]
            return out

        terminal = plan.process.terminal  # only CRIU's RPC hands back a new pty master
        got = criu.run(self.binary, "restore", args, self.opts.work(), "restore.log",
                       tuple(self.fds), _Preexec(plan.rootfs, root), inherit_stdio=True,
                       started=started, rpc=terminal,
                       notify=_ConsoleHandoff(self.copts.console_socket) if terminal else None)
        pid = got or _read_pid(pidfile)
        self.undo.push(_kill, pid, what="restored processes")
        _check_pid_namespace(plan, pid)
        _unlink(pidfile)
        os.rmdir(root)
        container.data.update(pid=pid, init_start=proc.start_time(pid), creating=False,
                              namespaces=dict(plan.namespaces), restored=True)
        container.data.pop("creator", None)
        hooks = {k: v for k, v in plan.hooks.items() if k == "poststop"}
        if hooks:
            container.data["hooks"] = hooks
        self.store.save(container)
        if self.copts.pid_file:
            from ocirt.runtime.process_setup import write_pid_file

            write_pid_file(self.copts.pid_file, pid)
        self.undo.clear()
        return container

    def _mounts(self) -> list[str]:
        """Each bind mount again from the config's source (runc's addCriuRestoreMount)."""
        out = []
        for m in self.plan.mounts:
            if m.is_bind:
                out += ["--external", f"mnt[{m.destination}]:{m.source}"]
        return out

    def _stdio(self) -> list[str]:
        """The init's stdio pipes become ours (the caller's new pipes), as in runc."""
        out = []
        for fd, what in enumerate(self.descriptors[:3]):
            if "pipe:" in what:
                out += ["--inherit-fd", f"fd[{fd}]:{what}"]
        return out

    def _namespaces(self) -> list[str]:
        """Namespaces the config names by path: net and pid are handed to CRIU as the
        external namespaces the dump named; the others are joined (--join-ns)."""
        out = []
        for kind, path in self.plan.namespaces.items():
            if not path:
                continue
            if kind in _NS_KEYS:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise OcirtError(f"open namespace {kind} at {path}: "
                                     f"{os.strerror(exc.errno or 0)}") from None
                self.fds.append(fd)
                out += ["--inherit-fd", f"fd[{fd}]:{_NS_KEYS[kind][1]}"]
            elif kind in _JOIN_NS:
                out += ["--join-ns", f"{_JOIN_NS[kind]}:{path}"]
            else:
                raise OcirtError(f"restore: joining the {kind} namespace at {path} is not "
                                 "supported")
        return out


class _ConsoleHandoff:
    """CRIU's "orphan-pts-master" notification: the restored terminal's new master goes
    to --console-socket, with its name, as at create (runc does the same)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, script: str, fds: list[int]) -> None:
        if script != "orphan-pts-master":
            return
        if not fds:
            raise OcirtError("restore: CRIU sent no pty master with orphan-pts-master")
        import fcntl
        import struct

        from ocirt.fs import console
        from ocirt.linux import consts

        number = struct.unpack("I", fcntl.ioctl(fds[0], consts.TIOCGPTN, b"\0" * 4))[0]
        sock = console.connect_socket(self.path)
        try:
            console.send_master(sock, fds[0], f"/dev/pts/{number}")
        finally:
            os.close(sock)


class _Preexec:
    """In CRIU's process, before exec: take a mount namespace of its own (slave to ours,
    so nothing propagates back) and bind the rootfs on the criu root there."""

    def __init__(self, rootfs: str, root: str) -> None:
        self.rootfs, self.root = rootfs, root

    def __call__(self) -> None:
        from ocirt.linux import consts, libc

        try:
            libc.unshare(consts.CLONE_NEWNS)
            libc.mount(None, "/", None, consts.MS_REC | consts.MS_SLAVE, None)
        except OSError as exc:  # e.g. EINVAL in a chroot: "/" is no mount point there
            raise OcirtError(f"no mount namespace of its own for CRIU (making / a slave "
                             f"mount: {errno_text(exc.errno or 0)}): restore needs / to be "
                             "a mount point") from None
        libc.mount(self.rootfs, self.root, None, consts.MS_BIND | consts.MS_REC, None)


def create_mountpoints(plan: Plan) -> None:
    """The mount points, in the rootfs, as `create` makes them (runc's
    prepareCriuRestoreMounts): a bind mount's as a file or directory like its source,
    any other's as a directory (a fresh rootfs, such as containerd's new snapshot for a
    restored container, lacks /proc or /run), a cgroup mount's none (it appears with
    /sys); those on a tmpfs come back with the tmpfs's content."""
    from ocirt.fs import resolve

    tmpfs = [m.destination.rstrip("/") + "/" for m in plan.mounts if m.fstype == "tmpfs"]
    root_fd = os.open(plan.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in plan.mounts:
            if m.fstype in ("cgroup", "cgroup2") or any(
                    m.destination.startswith(t) for t in tmpfs):
                continue
            if resolve.lstat_in_root(root_fd, m.destination) is not None:
                continue
            try:
                if not m.is_bind or os.path.isdir(m.source):
                    fd = resolve.mkdir_all(root_fd, m.destination)
                else:
                    fd = resolve.create_file(root_fd, m.destination)
            except OSError as exc:
                raise OcirtError(f"restore: create mount point {m.destination}: "
                                 f"{os.strerror(exc.errno or 0)}") from None
            os.close(fd)
    finally:
        os.close(root_fd)


def _check_pid_namespace(plan: Plan, pid: int) -> None:
    """A config with a pid namespace of its own gets its init in one: were it in ours,
    `kill --all` and `delete --force` would take every process of the namespace (all of
    the host's) for the container's."""
    if plan.namespaces.get("pid") == "" and proc.ns_inode(pid, "pid") == proc.ns_inode(
            "self", "pid"):
        raise OcirtError(f"restore: the restored init ({pid}) is not in a pid namespace of "
                         "its own, as the config asks")


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError) as exc:
        raise OcirtError(f"restore: criu wrote no pid file ({exc})") from None


def _kill(pid: int) -> None:
    from ocirt.linux.signals import kill_and_reap

    kill_and_reap(pid)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _now_ns() -> int:
    import time

    return time.time_ns()


def _wait_and_delete(store: Store, container: Container) -> int:
    """In the foreground, like `run`: wait for the restored init, forwarding signals,
    then delete the container."""
    from ocirt import log
    from ocirt.runtime.delete import destroy
    from ocirt.runtime.foreground import SignalForwarder, wait_and_relay

    status = wait_and_relay(container.pid, -1, SignalForwarder(container.pid, -1))
    try:
        with store.lock(container.id):
            destroy(store, store.load(container.id))
    except OcirtError as exc:
        log.warning(f"delete after restore: {exc}")
    return status
