"""podman with `--cgroup-manager systemd` runs ocirt on a systemd host (as podman does by
default on Debian, Ubuntu and Fedora): the container's scope in machine.slice carries the
limits podman asked for as unit properties (`systemctl show`) and in its cgroup files,
and no unit is left after `podman rm`. Runs where systemd is PID 1, such as the test guest
booted by `python -m tests.hosts`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from ocirt.cgroups import systemd
from tests.cgroups import helpers
from tests.conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not systemd.systemd_running() or shutil.which("podman") is None,
    reason="needs podman and systemd as PID 1 (python -m tests.hosts run boots such a host)")]


@pytest.fixture
def podman(tmp_path, ocirt_bin):
    """podman with the contrib snippet (pointed at the ocirt under test), private storage,
    the systemd cgroup manager, no network."""
    with open(os.path.join(REPO, "contrib", "podman", "ocirt.conf")) as f:
        text = f.read().replace('["/usr/local/bin/ocirt", "/usr/bin/ocirt"]', f'["{ocirt_bin}"]')
    conf = tmp_path / "containers.conf"
    conf.write_text(text)
    short = tempfile.mkdtemp(prefix="ocirt-pm-")  # podman wants a short runroot
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONTAINERS_CONF": str(conf),
           "HOME": str(tmp_path)}
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", f"{short}/run",
            "--storage-driver", "vfs", "--cgroup-manager", "systemd", "--events-backend",
            "file", "--runtime", "ocirt"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env,
                              timeout=180, stdin=subprocess.DEVNULL)
    slice_was_active = active("machine.slice")
    yield run
    run("rm", "--all", "--force", "--time", "0")
    shutil.rmtree(short, ignore_errors=True)
    if not slice_was_active and active("machine.slice") and slice_is_empty("machine.slice"):
        # podman's scopes made systemd start machine.slice; it outlives them otherwise
        subprocess.run(["systemctl", "stop", "machine.slice"], check=True)


def active(unit: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", unit]).returncode == 0


def slice_is_empty(unit: str) -> bool:
    """No unit (no child cgroup) left in the slice: stopping it stops nothing."""
    cg = show(unit, "ControlGroup")["ControlGroup"]
    base = "/sys/fs/cgroup" if helpers.UNIFIED else "/sys/fs/cgroup/systemd"
    try:
        with os.scandir(base + cg) as entries:
            return not any(e.is_dir() for e in entries)
    except FileNotFoundError:
        return True


def show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_podman_limits_reach_the_scope(podman, bundle):
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    r = podman("run", "-d", "--network", "none", "--memory", "64m", "--pids-limit", "33",
               "--cpu-shares", "512", "--rootfs", rootfs, "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip().splitlines()[-1]
    unit = f"libpod-{cid}.scope"
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", cid).stdout.strip())
    props = show(unit, "Slice", "Delegate", "MemoryMax", "MemoryLimit", "TasksMax",
                 "ControlGroup")
    assert props["Slice"] == "machine.slice" and props["Delegate"] == "yes", props
    assert str(64 << 20) in (props["MemoryMax"], props["MemoryLimit"]), props
    assert props["TasksMax"] == "33", props
    d = helpers.controller_dir(pid, "pids")
    assert d.endswith(props["ControlGroup"]), (d, props)
    assert helpers.read(d, "pids.max") == "33"
    memory = helpers.controller_dir(pid, "memory")
    limit = helpers.by_host("memory.limit_in_bytes", "memory.max")
    assert helpers.read(memory, limit) == str(64 << 20)
    r = podman("update", "--memory", "96m", cid)  # through ocirt's `update`
    assert r.returncode == 0, r.stderr
    assert helpers.read(memory, limit) == str(96 << 20)
    assert str(96 << 20) in show(unit, "MemoryMax", "MemoryLimit").values()
    r = podman("rm", "--force", "--time", "0", cid)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                             unit], capture_output=True, text=True).stdout
    assert unit not in listed, listed
