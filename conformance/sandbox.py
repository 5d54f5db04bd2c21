"""A private mount + cgroup namespace that every runtime invocation of the suite enters.

Why: the suite must never create a cgroup outside its own cgroup, whatever the runtime
under test does with `cgroupsPath` (absolute paths, or none at all, which some runtimes
turn into `/<id>` at the top of a hierarchy). A holder process unshares a mount and a
cgroup namespace while sitting in our own cgroups, replaces /sys/fs/cgroup with a
private tmpfs and mounts every hierarchy again from inside the new cgroup namespace, so
"/" of every hierarchy is our own cgroup; /run becomes a private tmpfs too. Runtime
commands then run through `nsenter` into those two namespaces (the runtime process
itself stays in our cgroups, which are the namespace root).

crun 1.8 refuses hybrid hosts (v1 controllers plus a cgroup2 mount), so for a runtime
named crun the cgroup2 mount at /sys/fs/cgroup/unified is left out (as the shared
engine-smoke tool does).

On a unified (cgroup v2-only) host our own cgroup holds processes (the suite), and v2
passes memory, io, hugetlb or rdma down only from cgroups without processes: a namespace
rooted there could give a container no such limit. There the namespace is rooted at a
new cgroup beside ours (below our parent, where runc puts relative cgroupsPath values on
v2), with every controller our parent has passed down to it; the holder moves into a
leaf `holder` once the namespace exists, and every runtime command starts in a leaf
`runtime`, so the root stays without processes. Closing removes it all and takes back
the controllers it enabled in our parent where nothing else is left below it.

The holder reads its stdin until EOF, so it ends when the suite closes the pipe or dies.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess

from conformance import cgroupfs


class SandboxError(RuntimeError):
    pass


def setup_lines(hide_unified: bool) -> list[str]:
    """Shell lines that, run in fresh mount + cgroup namespaces, remount every cgroup
    hierarchy from inside (so "/" is our own cgroup) on a private tmpfs, and give the
    namespace a private /run."""
    lines = ["set -e", "umount -R -l /sys/fs/cgroup",
             "mount -n -t tmpfs -o mode=755,nosuid,nodev,noexec "
             "conformance-cgroup /sys/fs/cgroup"]
    for h in cgroupfs.hierarchies():
        if h.fstype == "cgroup2" and hide_unified:
            continue
        mp = shlex.quote(h.mountpoint)
        opts = ",".join(("nosuid", "nodev", "noexec", *h.options))
        lines += [f"mkdir -p {mp}",
                  f"mount -n -t {h.fstype} -o {shlex.quote(opts)} {h.fstype} {mp}"]
    for name in sorted(os.listdir(cgroupfs.CGROUP_ROOT)):
        link = os.path.join(cgroupfs.CGROUP_ROOT, name)
        if os.path.islink(link):
            lines.append(f"ln -s {shlex.quote(os.readlink(link))} {shlex.quote(link)}")
    lines += ["mount -n -t tmpfs -o mode=755,nosuid,nodev conformance-run /run",
              "mkdir -p /run/lock"]
    return lines


def in_chroot() -> bool:
    """True when / is not a mount point here (a chroot): its propagation cannot change."""
    with open("/proc/self/mountinfo") as f:
        return not any(line.split()[4] == "/" for line in f)


def propagation_option() -> str:
    """unshare's --propagation: private, except in a chroot, where making / private
    fails; the chroot's mounts must then already be private (as fresh-machine makes them)."""
    return "unchanged" if in_chroot() else "private"


_SEQ = itertools.count()


def v2_root_for(own: str, mountpoint: str) -> str | None:
    """Where the namespace is rooted on a unified host: beside our cgroup (None at the
    top of the hierarchy, which may hold processes and pass controllers down). Named by
    our PID and a sequence number: one process may hold several sandboxes at once (a
    module's containerd and a test's own)."""
    if own == mountpoint:
        return None
    return os.path.join(os.path.dirname(own), f"ocirt-conformance-{os.getpid()}-{next(_SEQ)}")


class Sandbox:
    """`net`: a private network namespace too, reachable from nowhere else (for daemons
    such as Slurm's): its loopback up with a private address besides 127.0.0.1, since
    getaddrinfo(AI_ADDRCONFIG) finds nothing to bind where only 127.0.0.1 exists."""

    def __init__(self, hide_unified: bool = False, net: bool = False) -> None:
        self.hide_unified = hide_unified
        self.net = net
        self.proc: subprocess.Popen[bytes] | None = None
        self.v2_root: str | None = None  # the namespace's root on a unified host
        self.enabled: list[str] = []  # controllers we enabled in our parent

    def _script(self) -> str:
        lines = setup_lines(self.hide_unified)
        if self.net:
            lines += ["ip link set lo up", "ip addr add 10.254.254.1/32 dev lo"]
        if self.v2_root:  # the root keeps no process: the holder moves to a leaf
            lines.append('echo $$ >/sys/fs/cgroup/holder/cgroup.procs')
        return "\n".join([*lines, "echo ready", "cat >/dev/null"])

    def _make_v2_root(self) -> list[str]:
        """On a unified host: the namespace root beside our cgroup, with our parent's
        controllers; the argv prefix that puts the holder in it."""
        h = cgroupfs.unified()
        if h is None or not cgroupfs.is_unified():
            return []
        own = cgroupfs.host_dir(h, cgroupfs.proc_cgroups()[""])
        self.v2_root = v2_root_for(own, h.mountpoint)
        if self.v2_root is None:
            return []
        parent = os.path.dirname(self.v2_root)
        have = set(cgroupfs.read(parent, "cgroup.subtree_control").split())
        for controller in sorted(set(cgroupfs.read(parent, "cgroup.controllers").split())
                                 - have):
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{controller}")
            self.enabled.append(controller)
        for leaf in ("", "holder", "runtime"):
            os.mkdir(os.path.join(self.v2_root, leaf))
        return _join(self.v2_root)

    def start(self) -> None:
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise SandboxError(f"{tool} not found (util-linux)")
        self.proc = subprocess.Popen(
            [*self._make_v2_root(),
             "unshare", "--mount", "--cgroup", *(["--net"] if self.net else []),
             "--propagation", propagation_option(), "--",
             "/bin/sh", "-c", self._script()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            if self.proc.stdin:
                self.proc.stdin.close()
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.close()
            raise SandboxError(f"sandbox setup failed: {err.strip() or line!r}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def prefix(self, cwd: str | None = None) -> list[str]:
        """argv prefix that runs a command inside the sandbox, in `cwd` (default: ours)."""
        # nsenter's own --wd opens the directory before entering the mount namespace,
        # which leaves the runtime with an unreachable cwd; cd after entering instead.
        # --root: entering a mount namespace resets the root to the namespace's; in a
        # chroot that is not ours.
        leaf = _join(os.path.join(self.v2_root, "runtime")) if self.v2_root else []
        net = [f"--net=/proc/{self.pid}/ns/net"] if self.net else []
        return [*leaf, "nsenter", f"--mount=/proc/{self.pid}/ns/mnt",
                f"--cgroup=/proc/{self.pid}/ns/cgroup", *net, f"--root=/proc/{self.pid}/root",
                "--",
                "/bin/sh", "-c", 'cd -- "$0" && exec "$@"', cwd or os.getcwd()]

    def run(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess:
        """Run a helper command (mount, ...) inside the sandbox's mount namespace."""
        return subprocess.run([*self.prefix(), *argv], capture_output=True, text=True,
                              **kw)  # type: ignore[call-overload]

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self._remove_v2_root()

    def root_dir(self, key: str) -> str:
        """The host directory of the namespace's root in hierarchy `key`."""
        if self.v2_root and key == "":
            return self.v2_root
        h = next(h for h in cgroupfs.hierarchies() if h.key == key)
        return cgroupfs.host_dir(h, cgroupfs.proc_cgroups(self.pid)[key])

    def _remove_v2_root(self) -> None:
        if not self.v2_root:
            return
        cgroupfs.remove_tree(self.v2_root, timeout=5)
        parent = os.path.dirname(self.v2_root)
        h = cgroupfs.unified()
        own = cgroupfs.host_dir(h, cgroupfs.proc_cgroups()[""]) if h else ""
        if not any(e.is_dir() and e.path != own for e in os.scandir(parent)):
            for controller in reversed(self.enabled):
                try:
                    with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                        f.write(f"-{controller}")
                except OSError:
                    pass
        self.enabled = []


def _join(cgroup: str) -> list[str]:
    """argv prefix: the command starts in `cgroup` (a shell moves itself, then execs)."""
    return ["/bin/sh", "-c", 'echo $$ >"$0/cgroup.procs" && exec "$@"', cgroup]
