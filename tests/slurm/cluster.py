"""A one-node Slurm cluster of the test's own: munged, slurmctld and slurmd from Debian,
each with its own configuration, key, socket, spool and state directories under one
temporary directory, started inside a sandbox (private mount, cgroup and network
namespaces: the daemons' ports exist only on that namespace's loopback, and whatever
they or the runtime do with cgroups stays inside our own cgroup).

Only the daemons started here are stopped, by their PIDs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from conformance.cgroupfs import read as read_cgroup
from conformance.sandbox import Sandbox

DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "scancel", "squeue", "sinfo")
NODE = "ocirtnode"


def missing_tools() -> list[str]:
    return [t for t in DAEMONS if shutil.which(t) is None]


SLURM_CONF = """\
ClusterName=ocirttest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge/munge.socket
StateSaveLocation={dir}/ctld
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/ctld/slurmctld.pid
SlurmdPidFile={dir}/spool/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmctldDebug=debug
SlurmdDebug=debug
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=2
NodeName={node} NodeAddr=127.0.0.1 NodeHostname=localhost {hardware} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


# slurmd on cgroup v2 asks systemd over D-Bus for a scope for the steps; the sandbox's
# private /run has no bus, and a scope would be a cgroup outside ours. IgnoreSystemd: it
# makes the same directories itself, below the sandbox's cgroup root (our own cgroup).
# The v1 plugin ignores it.
CGROUP_CONF = """\
CgroupPlugin=autodetect
IgnoreSystemd=yes
"""

TOPOLOGY = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")


def hardware() -> str:
    """The node line's topology as slurmd detects it (`slurmd -C`): slurmd refuses a node
    whose configuration differs from its hardware."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return " ".join(f"{k}={fields[k]}" for k in TOPOLOGY)


class Cluster:
    """`start()`, then `srun(...)` as the user; `stop()` ends what `start` began."""

    def __init__(self, user: str) -> None:
        self.user = pwd.getpwnam(user)
        # /tmp, not pytest's 0700 directory: the user reads the configuration and bundles
        self.dir = tempfile.mkdtemp(prefix="ocirt-slurm-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "etc", "slurm.conf")
        self.sandbox = Sandbox(net=True)
        self.daemons: list[subprocess.Popen[bytes]] = []

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # --- setting up ----------------------------------------------------------------

    def start(self) -> None:
        for name, mode in (("etc", 0o755), ("munge", 0o755), ("munge-key", 0o700),
                           ("ctld", 0o700), ("spool", 0o755), ("log", 0o755),
                           ("run", 0o755)):
            os.mkdir(self.path(name), mode)
        with open(self.path("munge-key", "munge.key"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(self.path("munge-key", "munge.key"), 0o400)
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(dir=self.dir, node=NODE, hardware=hardware()))
        with open(self.path("etc", "cgroup.conf"), "w") as f:
            f.write(CGROUP_CONF)
        # the user's private state root, as /run/user/UID would be on a systemd machine
        user_run = self.path("run", str(self.user.pw_uid))
        os.mkdir(user_run, 0o700)
        os.chown(user_run, self.user.pw_uid, self.user.pw_gid)
        self.sandbox.start()
        self._system_slice()
        self._daemon("munged", ["munged", "-F", f"--socket={self.path('munge', 'munge.socket')}",
                                f"--key-file={self.path('munge-key', 'munge.key')}",
                                f"--pid-file={self.path('munge-key', 'munged.pid')}",
                                f"--seed-file={self.path('munge-key', 'munged.seed')}",
                                f"--log-file={self.path('log', 'munged.log')}"],
                     ready=lambda: os.path.exists(self.path("munge", "munge.socket")))
        self._daemon("slurmctld", ["slurmctld", "-D", "-f", self.conf],
                     ready=lambda: self._query(["sinfo", "-h"]).returncode == 0)
        self._daemon("slurmd", ["slurmd", "-D", "-N", NODE, "-f", self.conf],
                     ready=lambda: "idle" in self._query(["sinfo", "-h", "-o", "%T"]).stdout)

    def _system_slice(self) -> None:
        """On a v2-only host, what IgnoreSystemd leaves to us (Slurm's cgroup v2 guide):
        system.slice at the sandbox's cgroup root, the root's controllers enabled down to
        it. Below our own cgroup; closing the sandbox removes the tree."""
        root = self.sandbox.v2_root
        if root is None:
            return
        os.mkdir(os.path.join(root, "system.slice"))
        for d in (root, os.path.join(root, "system.slice")):
            for controller in read_cgroup(d, "cgroup.controllers").split():
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write(f"+{controller}")

    def _daemon(self, name: str, argv: list[str], ready: object) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": self.conf}
        with open(self.path("log", f"{name}.out"), "wb") as log:
            proc = subprocess.Popen([*self.sandbox.prefix(self.dir), *argv],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
        self.daemons.append(proc)
        deadline = time.monotonic() + 30
        while not ready():  # type: ignore[operator]
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {self.log(name + '.out')[-2000:]}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        try:
            with open(self.path("log", name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # --- using it ------------------------------------------------------------------

    def _query(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([*self.sandbox.prefix(self.dir), *argv], capture_output=True,
                              text=True, timeout=30, env={"PATH": "/usr/bin:/bin",
                                                          "SLURM_CONF": self.conf})

    def as_user(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """argv run as the user inside the cluster's namespaces."""
        base = {"PATH": "/usr/bin:/bin", "SLURM_CONF": self.conf, "HOME": self.dir,
                "USER": self.user.pw_name, **(env or {})}
        return [*self.sandbox.prefix(self.dir), "runuser", "-u", self.user.pw_name, "--",
                "env", "-i", *(f"{k}={v}" for k, v in base.items()), *argv]

    def srun(self, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.as_user(["srun", *args], env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def spawn_srun(self, *args: str, out: str) -> subprocess.Popen[bytes]:
        with open(out, "wb") as f:
            return subprocess.Popen(self.as_user(["srun", *args]), stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def jobs(self) -> list[str]:
        return self._query(["squeue", "-h", "-o", "%i"]).stdout.split()

    def scancel(self, job: str) -> None:
        r = self._query(["scancel", job])
        assert r.returncode == 0, r.stderr

    def mounts(self) -> list[str]:
        """Mount points under the cluster's directory, in the daemons' mount namespace."""
        from tests.leaks import mounts_under

        return mounts_under(self.dir, self.sandbox.pid)

    # --- tearing down --------------------------------------------------------------

    def stop(self) -> list[str]:
        """Cancel the jobs, stop the daemons and the sandbox; returns the mounts left in
        the sandbox. Whatever else still runs in the private network namespace (a
        slurmstepd outliving slurmd after a failure) was started by this cluster."""
        if self.daemons and self.daemons[-1].poll() is None:
            for job in self.jobs():
                self._query(["scancel", job])
            deadline = time.monotonic() + 30
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.daemons.clear()
        if self.sandbox.proc is None:
            return []
        for pid in self._in_our_network():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leaked = self.mounts()
        self.sandbox.close()
        return leaked

    def _in_our_network(self) -> list[int]:
        """Processes in the sandbox's network namespace, but for the sandbox's holder."""
        ours = os.readlink(f"/proc/{self.sandbox.pid}/ns/net")
        found = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{name}/ns/net") == ours:
                    found.append(int(name))
            except OSError:
                continue
        holder = {self.sandbox.pid, *_children(self.sandbox.pid)}
        return [p for p in found if p not in holder]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
