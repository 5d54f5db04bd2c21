"""`create`: build the container from a bundle and leave its init waiting for `start`.

This is the parent side of the protocol in `ocirt.process.protocol`. Every step pushes
its undo; any failure runs them all, so a failed create leaves no process, cgroup, fd or
state directory behind (runc runs the poststop hooks then too).
"""

from __future__ import annotations

import os

from ocirt import log
from ocirt.errors import OcirtError, errno_text
from ocirt.linux import proc
from ocirt.runtime.hostmounts import host_mounts_below, unmount_host_mounts
from ocirt.runtime.process_setup import (
    check_security_labels,
    inherited_fds,
    warn_and_keep_grantable,
    write_pid_file,
)
from ocirt.spec.plan import Plan
from ocirt.state import CONFIG_FILE, FIFO_FILE, Container, Store, rfc3339_nano, write_atomic
from ocirt.undo import Undo

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


class CreateOptions:
    """`create` and `run` flags (runc's spelling in the comments)."""

    def __init__(self, bundle: str = "", pid_file: str = "", console_socket: str = "",
                 no_pivot: bool = False, no_new_keyring: bool = False, preserve_fds: int = 0,
                 console_fd: int = -1, systemd_cgroup: bool = False, rootless: str = "auto"
                 ) -> None:
        self.bundle = bundle  # --bundle
        self.pid_file = pid_file  # --pid-file
        self.console_socket = console_socket  # --console-socket
        self.no_pivot = no_pivot  # --no-pivot
        self.no_new_keyring = no_new_keyring  # --no-new-keyring
        self.preserve_fds = preserve_fds  # --preserve-fds
        self.console_fd = console_fd  # `run` in the foreground with a terminal: our own socket
        self.sif_bundle = ""  # --image: the bundle made from the image, the container's
        self.sif_lease: dict[str, Any] | None = None  # --image: its share of the image's mount
        self.sif_keys: list[str] = []  # --key: trusted keys for a SIF image (also root.path)
        self.sif_pgp_keys: list[str] = []  # --pgp-key
        self.systemd_cgroup = systemd_cgroup  # global --systemd-cgroup
        self.rootless = rootless  # global --rootless


def load_plan(bundle: str, opts: CreateOptions) -> tuple[Plan, dict[str, Any]]:
    from ocirt.spec.load import load_config, resolve_bundle
    from ocirt.spec.plan import build_plan

    bundle = resolve_bundle(bundle)
    spec = load_config(bundle)
    plan = build_plan(spec, bundle, no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring)
    if not os.path.isdir(plan.rootfs):
        from ocirt.runtime.image import is_sif

        if not is_sif(plan.rootfs):
            raise OcirtError(f"rootfs ({plan.rootfs}) does not exist")
        plan.sif_root = True  # root.path names a SIF image: mounted by `create`
    else:
        check_unpacked_devices(plan)
    return plan, spec


def check_unpacked_devices(plan: Plan) -> None:
    """A root that `ocirt sif bundle --unpack` extracted from an untrusted image holds no
    device nodes (the unpack creates none); one there now was written later, e.g. by a
    container with CAP_MKNOD into its writable root, and is refused, except below the
    /dev mounts of the spec, which hide it. Ordinary bundles are not checked: runc
    accepts a rootfs with a static /dev, and engines' rootfs are theirs to vouch for."""
    from ocirt.sif.record import unpacked_rootfs_devices

    hidden = tuple(m.destination for m in plan.mounts
                   if m.destination == "/dev" or m.destination.startswith("/dev/"))
    found = unpacked_rootfs_devices(plan.bundle, plan.rootfs, hidden)
    if found:
        raise OcirtError(f"rootfs ({plan.rootfs}) was unpacked from a SIF image and holds "
                         f"device node {found[0]}: refusing it (device nodes belong in "
                         "the container's /dev mount)")


def check_terminal(plan: Plan, opts: CreateOptions) -> None:
    has_console = bool(opts.console_socket) or opts.console_fd >= 0
    if plan.process.terminal and not has_console:
        raise OcirtError("cannot allocate tty if ocirt will detach without setting console "
                         "socket")
    if not plan.process.terminal and opts.console_socket:
        raise OcirtError("cannot use console socket if ocirt will not detach or allocate tty")


def create(store: Store, cid: str, opts: CreateOptions,
           loaded: tuple[Plan, dict[str, Any]] | None = None) -> Container:
    """Create container `cid`; returns its recorded state (status `created`).
    `loaded` is the bundle's (plan, config) when the caller has read it already."""
    from ocirt.state import validate_id

    validate_id(cid)
    plan, spec = loaded or load_plan(opts.bundle, opts)
    check_terminal(plan, opts)
    warn_and_keep_grantable(plan)
    check_security_labels(plan)
    rdt_root = check_intel_rdt(plan, cid)
    seccomp = None
    if plan.seccomp is not None:
        from ocirt.seccomp import compile_filter

        seccomp = compile_filter(plan.seccomp, store.cache_dir("seccomp"))
    hooks = None
    if plan.hooks:
        from ocirt import hooks as hooks_module

        hooks = hooks_module
    keep_fds, extra_env = inherited_fds(opts.preserve_fds)
    creation = Creation(store, cid, plan, spec, opts, seccomp, hooks, keep_fds, extra_env)
    creation.rdt_root = rdt_root
    return creation.run()


def check_intel_rdt(plan: Plan, cid: str) -> str:
    """linux.intelRdt needs a mounted resctrl with what the config asks for: checked
    before anything exists (runc's validator). Returns the resctrl mount point."""
    if plan.intel_rdt is None:
        return ""
    from ocirt import resctrl

    root = resctrl.find_root()
    resctrl.check(plan.intel_rdt, root, cid)
    return root


class Creation:
    """One `create`, step by step, with its undo stack."""

    def __init__(self, store: Store, cid: str, plan: Plan, spec: dict[str, Any],
                 opts: CreateOptions, seccomp: Any, hooks: Any, keep_fds: int,
                 extra_env: list[str]) -> None:
        self.store = store
        self.cid = cid
        self.plan = plan
        self.spec = spec
        self.opts = opts
        self.seccomp = seccomp
        self.hooks = hooks
        self.keep_fds = keep_fds
        self.extra_env = extra_env
        self.undo = Undo()
        self.intermediate = 0
        self.init_pid = 0
        self.born_in: tuple[str, ...] = ()  # the cgroups the intermediate was born in
        self.container: Container | None = None
        self.mounts_before: list[list[Any]] = []
        self.rdt_root = ""  # the resctrl mount point, when the config has linux.intelRdt
        self.net_devices: Any = None  # netdev.MovedDevices, when the config moves devices

    def run(self) -> Container:
        from ocirt.process import init as init_code  # noqa: F401  (imported before fork)

        lock = self.store.claim(self.cid)
        try:
            self.undo.push(self._poststop, what="poststop hooks")
            self.undo.push(self.store.remove, self.cid, what="state directory")
            return self._create()
        except BaseException:
            self.undo.run()
            raise
        finally:
            if self.net_devices is not None:
                self.net_devices.close()  # held for the undo only (netdev.MovedDevices)
            lock.close()

    def _create(self) -> Container:
        from ocirt.cgroups import manager_for_plan
        from ocirt.process.child import InitContext, run_child
        from ocirt.process.init import intermediate
        from ocirt.process.protocol import ChildDied, socketpair

        plan = self.plan
        me = os.getpid()
        container = Container(self.cid, self.store.dir(self.cid), {
            "ociVersion": plan.oci_version, "id": self.cid, "pid": 0, "bundle": plan.bundle,
            "rootfs": plan.rootfs, "created": rfc3339_nano(_now_ns()),
            "annotations": plan.annotations, "creating": True,
            "creator": [me, proc.start_time(me)],
        })
        if plan.no_new_keyring:  # `exec` then keeps its caller's keyring too (runc)
            container.data["no_new_keyring"] = True
        self.container = container
        from ocirt.runtime import notify

        self.store.save(container)  # from here on `delete --force` knows its creator
        self._sif(container)
        # What follows up to the cgroup's record lives in the state directory (the notify
        # directory, config.json, the fifo) or in fds: `delete --force` needs no record of
        # it, so it is saved with the cgroup's (each save is a rename over the old file,
        # which ext4 makes flush the new one: ~0.3 ms, several ms on a busy disk).
        container.data["notify_socket"] = notify.prepare(plan, container.dir)
        write_atomic(container.path(CONFIG_FILE), _dump(self.spec))
        if not plan.has("mount"):
            self.mounts_before = host_mounts_below(plan.rootfs)
            container.data["mounts_before"] = self.mounts_before  # see delete.destroy
            self.undo.push(self._unmount_new_host_mounts, what="mounts below the rootfs")
        fifo_fd = self._make_fifo(container)
        console_fd = self._console_fd()
        ns_fds = self._open_namespaces()
        idmapped = self._idmapped_mounts()
        cg = manager_for_plan(plan, self.cid, systemd=self.opts.systemd_cgroup,
                              rootless=self.opts.rootless)
        # Recorded before it is made, so that `delete --force` after a SIGKILL of this
        # process at any instant removes every directory create() made (and, without a
        # mount namespace, what the init mounts below the rootfs: mounts_before).
        planned = container.data["cgroup"] = cg.planned_state()
        self.store.save(container)
        self.undo.push(cg.destroy, what="cgroup")
        cg.create()
        made = cg.state()
        if made != planned:  # a directory that appeared meanwhile is not ours to remove
            container.data["cgroup"] = made
            self.store.save(container)
        parent, child = socketpair()
        self.undo.push(parent.close, what="sync socket")
        ctx = InitContext(plan, self.cid, child, fifo_fd, console_fd, ns_fds, self.keep_fds,
                          self.extra_env, self.seccomp, self.hooks)
        ctx.idmapped = idmapped
        from ocirt.linux import consts, libc

        libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)  # the init is ours to reap on failure
        from ocirt.cgroups import fork_in_cgroups

        birth = cg.birth()
        ctx.cgroup_tasks = birth.tasks() if birth else []
        try:
            pid, self.born_in = fork_in_cgroups(birth)
            if pid == 0:
                parent.close()
                run_child(intermediate, ctx)  # (never returns)
        finally:
            if birth:
                birth.close()
        if birth:
            log.debug(f"the init is born in its cgroups: {birth.summary(self.born_in)}")
        self.intermediate = pid
        self.undo.push(self._kill_children, what="container processes")
        child.close()
        for fd in (fifo_fd, *ns_fds.values(), *idmapped.values()):
            os.close(fd)
        if console_fd >= 0 and console_fd != self.opts.console_fd:
            os.close(console_fd)
        try:
            self._handshake(parent, container, cg)
        except ChildDied:
            raise OcirtError(died_why(cg, plan)) from None
        parent.close()
        self.undo.clear()
        if self.opts.sif_bundle:
            from ocirt.runtime.image import unmark_creator

            unmark_creator(self.opts.sif_bundle)  # state.json names it now
        return container

    # -- steps ----------------------------------------------------------------------------

    def _sif(self, container: Container) -> None:
        """The container owns its SIF bundle (--image) or its mounted SIF root."""
        if not (self.opts.sif_bundle or self.plan.sif_root):
            return
        from ocirt.runtime import image

        if self.opts.sif_bundle:
            owned = {"sif_bundle": self.opts.sif_bundle, "sif_lease": self.opts.sif_lease}
            container.data.update({k: v for k, v in owned.items() if v})
            self.undo.push(image.release, owned, what="SIF bundle")
        if self.plan.sif_root:
            checked_by = image.policy(self.opts.sif_keys, self.opts.sif_pgp_keys)
            entries = image.mount_root(self.plan, container.dir, checked_by, self.store,
                                       self.cid, self._record_lease)
            container.data.update(entries)
            self.undo.push(image.release, entries, what="SIF mount")
            container.data["rootfs"] = self.plan.rootfs
        self.store.save(container)

    def _record_lease(self, lease: dict[str, Any] | None) -> None:
        """Saved before the image's shared mount is leased (None: it was not), so that
        `delete --force` after a SIGKILL of this process at any instant gives it back."""
        assert self.container is not None
        if lease:
            self.container.data["sif_lease"] = lease
        else:
            self.container.data.pop("sif_lease", None)
        self.store.save(self.container)

    def _make_fifo(self, container: Container) -> int:
        path = container.path(FIFO_FILE)
        os.mkfifo(path, 0o622)
        # O_RDWR: the open does not block, and the init (which inherits this fd) then
        # blocks in read() until `start` writes (see ocirt.runtime.start).
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def _console_fd(self) -> int:
        if self.opts.console_fd >= 0:
            return self.opts.console_fd
        if not self.opts.console_socket:
            return -1
        from ocirt.fs.console import connect_socket

        return connect_socket(self.opts.console_socket)

    def _open_namespaces(self) -> dict[str, int]:
        fds = {}
        try:
            for kind, path in self.plan.namespaces.items():
                if path:
                    fds[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            for fd in fds.values():
                os.close(fd)
            raise OcirtError(f"open namespace {kind} at {path}: "
                             f"{errno_text(exc.errno or 0)}") from None
        return fds

    def _idmapped_mounts(self) -> dict[int, int]:
        """Idmapped mounts are made here, on the host side (ocirt.fs.idmap)."""
        if not any(m.idmapped for m in self.plan.mounts):
            return {}
        from ocirt.fs import idmap

        return idmap.prepare(self.plan)

    def _handshake(self, parent: Any, container: Container, cg: Any) -> None:
        from ocirt.process import attrs

        plan = self.plan
        on_log = log.emit_from_child
        parent.send("go")
        msg, _ = parent.expect("idmap-request", "init-pid", on_log=on_log)
        if msg["type"] == "idmap-request":
            write_id_maps(int(msg["pid"]), plan)
            parent.send("idmap-done")
            msg, _ = parent.expect("init-pid", on_log=on_log)
        self.init_pid = int(msg["pid"])
        # The init makes its mounts while we move it (ocirt.process.protocol says why).
        cg.add(self.init_pid, skip=self.born_in)
        cg.apply(plan.resources)
        attrs.set_final_affinity(self.init_pid, None)  # within the cpuset just applied
        container.data["cgroup"] = cg.state()
        if plan.intel_rdt is not None:
            self._intel_rdt(container)
        self._reap_intermediate()
        if plan.net_devices:
            self._move_net_devices()
        container.data["pid"] = self.init_pid
        container.data["init_start"] = proc.start_time(self.init_pid)
        self.store.save(container)  # the hooks below may outlive us (SIGKILL)
        msg, _ = parent.expect("cgroup-join", "create-hooks", on_log=on_log)
        if msg["type"] == "cgroup-join":
            parent.send("cgroup-joined")
            parent.expect("create-hooks", on_log=on_log)
        # The state prestart hooks read says "created" (runtime-tools checks it, crun does
        # it); createRuntime hooks see "creating", as runc passes them.
        self._run_hooks(("prestart",), "created")
        self._run_hooks(("createRuntime",), "creating")
        parent.send("create-hooks-done", pid=self.init_pid)
        parent.expect("ready", on_log=on_log)
        if plan.process.rlimits:
            attrs.set_rlimits(self.init_pid, plan.process.rlimits)
        if plan.process.oom_score_adj is not None:
            attrs.set_oom_score_adj(self.init_pid, plan.process.oom_score_adj)
        parent.send("ready-ack")
        from ocirt.process.protocol import wait_closed

        wait_closed(parent, on_log=on_log)  # the init's execve of the trampoline closed it
        self._check_sealed(cg)
        container.data["creating"] = False
        container.data.pop("creator", None)
        container.data.pop("mounts_before", None)
        hooks = {k: v for k, v in plan.hooks.items()
                 if k in ("startContainer", "poststart", "poststop")}
        if hooks:
            container.data["hooks"] = hooks
        container.data["namespaces"] = dict(plan.namespaces)
        if not plan.has("mount"):
            container.data["host_mounts"] = [
                m for m in host_mounts_below(plan.rootfs) if m not in self.mounts_before]
        self.store.save(container)
        if self.opts.pid_file:
            write_pid_file(self.opts.pid_file, self.init_pid)

    def _intel_rdt(self, container: Container) -> None:
        """The init joins its resctrl group; the record is saved before the group is made,
        so that `delete --force` removes it even after a SIGKILL here."""
        from ocirt import resctrl

        assert self.plan.intel_rdt is not None
        rec = resctrl.record(self.plan.intel_rdt, self.rdt_root, self.cid)
        container.data["intel_rdt"] = rec
        self.store.save(container)
        self.undo.push(resctrl.destroy, rec, what="resctrl group")
        resctrl.apply(self.plan.intel_rdt, rec, self.init_pid)

    def _check_sealed(self, cg: Any) -> None:
        """The sync socket closes when the init execs the sealed trampoline, or when it
        dies: it must be alive, and (where we may look: root) be the trampoline."""
        from ocirt.process import trampoline

        pid = self.init_pid
        if not proc.is_running(pid, self.container.data.get("init_start")
                               if self.container else None):
            raise OcirtError(died_why(cg, self.plan))
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return  # unprivileged: a non-dumpable process's exe is not ours to read
        if not exe.startswith(f"/memfd:{trampoline.NAME}"):
            raise OcirtError(f"the container init runs {exe}, not the sealed trampoline")

    def _move_net_devices(self) -> None:
        from ocirt.runtime import netdev

        self.net_devices = netdev.move_devices(self.plan.net_devices, self.init_pid)
        self.undo.push(netdev.move_back, self.net_devices, what="network devices")

    def _run_hooks(self, kinds: tuple[str, ...], status: str) -> None:
        if not self.hooks:
            return
        plan = self.plan
        state = self.hooks.hook_state(self.cid, status, self.init_pid, plan.bundle,
                                      plan.annotations, plan.oci_version)
        for kind in kinds:
            if plan.hooks.get(kind):
                self.hooks.run_hooks(kind, plan.hooks[kind], state)

    def _poststop(self) -> None:
        if not self.hooks or not self.plan.hooks.get("poststop"):
            return
        plan = self.plan
        state = self.hooks.hook_state(self.cid, "stopped", self.init_pid, plan.bundle,
                                      plan.annotations, plan.oci_version)
        self.hooks.run_hooks_warning("poststop", plan.hooks["poststop"], state)

    def _unmount_new_host_mounts(self) -> None:
        unmount_host_mounts([m for m in host_mounts_below(self.plan.rootfs)
                             if m not in self.mounts_before])

    def _reap_intermediate(self) -> None:
        _, status = os.waitpid(self.intermediate, 0)
        self.intermediate = 0
        if status != 0:
            raise OcirtError(f"container intermediate process failed (wait status {status})")

    def _kill_children(self) -> None:
        from ocirt.linux.signals import kill_and_reap

        kill_and_reap(self.init_pid, self.intermediate)


def died_why(cg: Any, plan: Plan) -> str:
    """One line for a container process that died mid-handshake: the OOM killer when
    the memory cgroup counted a kill (a limit too small even to start the container)."""
    from ocirt.cgroups.oom import oom_kills

    if oom_kills(cg):
        limit = ((plan.resources or {}).get("memory") or {}).get("limit")
        told = f" of {limit} bytes" if limit else ""
        return ("container init was killed by the OOM killer while it set up the "
                f"container: linux.resources.memory.limit{told} is too low")
    return "container init exited unexpectedly"


def _now_ns() -> int:
    import time

    return time.time_ns()


def _dump(spec: dict[str, Any]) -> bytes:
    from ocirt import jsonio

    return jsonio.dumps(spec).encode()


def write_id_maps(pid: int, plan: Plan) -> None:
    """uid_map/gid_map of the new user namespace. As root we write them ourselves; an
    unprivileged caller may map only itself (setgroups denied) unless newuidmap/newgidmap
    (setuid helpers from the uidmap package) grant its subordinate ids."""
    maps = (("uid_map", plan.uid_mappings, "newuidmap"), ("gid_map", plan.gid_mappings,
                                                          "newgidmap"))
    if os.geteuid() == 0 or _maps_only_self(plan):
        if os.geteuid() != 0:
            proc.write_file(pid, "setgroups", "deny")
        for name, entries, _ in maps:
            proc.write_id_map(pid, name, entries)
        return
    import subprocess

    for _, entries, helper in maps:
        args = [helper, str(pid)] + [str(v) for entry in entries for v in entry]
        try:
            result = subprocess.run(args, capture_output=True, text=True)
        except FileNotFoundError:
            raise OcirtError(f"{helper} is needed to map these ids (install the uidmap "
                             "package)") from None
        if result.returncode != 0:
            raise OcirtError(f"{helper} failed: {result.stderr.strip()}")


def _maps_only_self(plan: Plan) -> bool:
    return (len(plan.uid_mappings) == 1 and plan.uid_mappings[0][1:] == (os.geteuid(), 1)
            and len(plan.gid_mappings) == 1 and plan.gid_mappings[0][1:] == (os.getegid(), 1))
