"""containerd's runc shim with `SystemdCgroup = true` runs ocirt on a systemd host (what
Kubernetes nodes with the systemd cgroup driver do): the shim calls ocirt with
`--systemd-cgroup` and a "slice:prefix:name" cgroupsPath, the container's scope carries
the limits as unit properties (`systemctl show`) and in its cgroup files, and no unit,
cgroup or shim is left after the task and container are deleted. `ctr run
--runc-systemd-cgroup` sets exactly the shim option that the CRI plugin's `SystemdCgroup`
sets. Runs where systemd is PID 1, such as the test guest booted by
`python -m tests.hosts`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from ocirt.cgroups import systemd
from tests.cgroups import helpers
from tests.leaks import processes_naming

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not systemd.systemd_running() or shutil.which("containerd") is None,
    reason="needs containerd and systemd as PID 1 (python -m tests.hosts run boots such a host)")]

NAMESPACE = "ocirt-test"
CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


@pytest.fixture
def ctr():
    """A containerd of the test's own (its root, state and socket in a short directory
    of ours, no CRI plugin); yields `ctr` against it. Fails on a shim left running."""
    d = tempfile.mkdtemp(prefix="ocirt-ctrd-")  # a unix socket path has at most 107 bytes
    with open(f"{d}/config.toml", "w") as f:
        f.write(CONFIG.format(d=d))
    sock = f"{d}/containerd.sock"
    with open(f"{d}/containerd.log", "wb") as log:
        daemon = subprocess.Popen(["containerd", "--config", f"{d}/config.toml"],
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not os.path.exists(sock) and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", sock, "-n", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
    try:
        if not os.path.exists(sock):
            with open(f"{d}/containerd.log", errors="replace") as f:
                pytest.fail(f"containerd did not listen: {f.read()[-3000:]}")
        yield run
    finally:
        for cid in run("containers", "list", "--quiet").stdout.split():
            run("tasks", "delete", "--force", cid)
            run("containers", "delete", cid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        shims = processes_naming(sock)
        for pid in shims:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
    assert not shims, f"shims left running: {shims}"


def show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_shim_with_systemd_cgroup_puts_limits_on_the_scope(ctr, bundle, ocirt_bin):
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    name = f"ctrd-{os.getpid()}"
    unit = f"ocirt-test-{name}.scope"
    r = ctr("run", "--detach", "--null-io", "--rootfs", "--runc-binary", ocirt_bin,
            "--runc-systemd-cgroup", "--cgroup", f"system.slice:ocirt-test:{name}",
            "--memory-limit", str(64 << 20), "--cpu-quota", "50000", "--cpu-period", "100000",
            rootfs, name, "/bin/sleep", "300")  # no image: no PATH in the spec
    assert r.returncode == 0, r.stderr
    tasks = ctr("tasks", "list").stdout.split("\n")
    (pid,) = [int(line.split()[1]) for line in tasks[1:] if line.startswith(name + " ")]
    props = show(unit, "Slice", "Delegate", "MemoryMax", "CPUQuotaPerSecUSec",
                 "ControlGroup", "ActiveState")
    assert props["Slice"] == "system.slice" and props["Delegate"] == "yes", props
    assert props["ActiveState"] == "active", props
    assert props["MemoryMax"] == str(64 << 20), props
    assert props["CPUQuotaPerSecUSec"] == "500ms", props
    memory = helpers.controller_dir(pid, "memory")
    assert memory.endswith(props["ControlGroup"]), (memory, props)
    limit = helpers.by_host("memory.limit_in_bytes", "memory.max")
    assert helpers.read(memory, limit) == str(64 << 20)
    if helpers.UNIFIED:
        assert helpers.read(memory, "cpu.max") == "50000 100000"
    r = ctr("tasks", "kill", "--signal", "SIGKILL", name)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    while "STOPPED" not in ctr("tasks", "list").stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    r = ctr("tasks", "delete", name)
    assert r.returncode == 0, r.stderr
    r = ctr("containers", "delete", name)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                             unit], capture_output=True, text=True).stdout
    assert unit not in listed, listed
    assert not os.path.exists(memory), memory
