"""containerd with its CRI plugin, started by a test in a private sandbox and removed
without a trace.

Why a sandbox: containerd writes below /var/lib/containerd, /run/containerd and the
`opt` plugin's directory, mounts snapshots, and its CRI plugin makes a cgroup for every pod
below the pod's cgroup parent. The conformance sandbox (tests run the runtimes in it too)
gives it a private mount and cgroup namespace whose cgroup root is our own cgroup; on top,
/var/lib, /run and /opt are private tmpfs there, so containerd runs with the stock paths
of the file under test and everything it writes goes when the sandbox ends. Only the gRPC
socket (a short directory of our own) and the pods' log and hostPath directories live on
the host's file system, where the test reads them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from types import ModuleType

from conformance.sandbox import Sandbox
from tests.cri.client import Cri
from tests.leaks import processes_naming

NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin keeps its images in
PRIVATE_DIRS = ("/var/lib", "/opt")  # /run is private in every Sandbox already


class ContainerdError(RuntimeError):
    pass


class Containerd:
    """One containerd daemon reading `config` (the text of a config.toml)."""

    def __init__(self, config: str, pb: ModuleType, stubs: ModuleType) -> None:
        # A short directory: a unix socket path has at most 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="ocirt-cri-")
        self.socket = os.path.join(self.dir, "containerd.sock")
        self.config_path = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.sandbox = Sandbox()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cri: Cri | None = None
        self._pb, self._stubs = pb, stubs

    def start(self, timeout: float = 60.0) -> Cri:
        self.sandbox.start()
        for d in PRIVATE_DIRS:
            if os.path.isdir(d):
                r = self.sandbox.run(["mount", "-n", "-t", "tmpfs", "-o", "mode=755",
                                      "ocirt-cri", d])
                if r.returncode != 0:
                    raise ContainerdError(f"private tmpfs on {d}: {r.stderr.strip()}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.sandbox.prefix("/"), "containerd", "--config", self.config_path,
                 "--address", self.socket, "--log-level", "info"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.cri = Cri(self.socket, self._pb, self._stubs)
        try:
            self.cri.wait_ready(timeout, lambda: self.proc is not None and
                                self.proc.poll() is None)
        except Exception as e:
            raise ContainerdError(
                f"containerd did not serve CRI: {e}\n{self.log_tail()}") from None
        return self.cri

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def ctr(self, *args: str) -> subprocess.CompletedProcess:
        """ctr against this daemon, in the CRI plugin's namespace."""
        return self.sandbox.run(["ctr", "--address", self.socket, "-n", NAMESPACE, *args],
                                timeout=120)

    def in_sandbox(self, *argv: str) -> subprocess.CompletedProcess:
        """A helper command seen from the daemon's side (its /run, its cgroup root)."""
        return self.sandbox.run(list(argv), timeout=60)

    def remove_all_pods(self) -> list[str]:
        """Stop and remove every pod sandbox (what is left when a test failed midway);
        returns their IDs."""
        assert self.cri is not None
        pb, rt = self.cri.pb, self.cri.rt
        ids = [p.id for p in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items]
        for pid in ids:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pid), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=60)
        return ids

    def stop(self) -> list[str]:
        """Stop containerd and end the sandbox; returns what had to be killed or was left
        (shims, processes), for the caller to fail on."""
        left: list[str] = []
        if self.cri is not None:
            self.cri.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                left.append("containerd ignored SIGTERM")
        # Shims daemonize and name our socket on their command line.
        for pid in processes_naming(self.socket):
            left.append(f"shim {pid}: {_cmdline(pid)}")
            _kill(pid)
        self.sandbox.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return left


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
