"""`--systemd-cgroup` against the host's real systemd (PID 1): the transient scope with
Delegate=yes, the limits as unit properties (what `systemctl show` says) and in the
cgroup files, `update` reaching both, and no unit left after delete or a failed create.
Runs on a systemd host such as the test guest (`python -m tests.hosts`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from ocirt.cgroups import systemd
from tests.cgroups import helpers

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not systemd.systemd_running(),
    reason="needs systemd as PID 1 (python -m tests.hosts run boots a host with it)")]


def show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def unit_known(unit: str) -> bool:
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", unit],
                         capture_output=True, text=True).stdout
    return unit in out


@pytest.fixture
def sd(ocirt):
    return type(ocirt)(ocirt.binary, ocirt.root, ["--systemd-cgroup"])


def names(tag: str) -> tuple[str, str]:
    """(cgroupsPath, unit) in system.slice."""
    name = f"{tag}-{os.getpid()}"
    return f"system.slice:ocirt-test:{name}", f"ocirt-test-{name}.scope"


LIMITS = {"memory": {"limit": 64 << 20, "reservation": 32 << 20},
          "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
          "pids": {"limit": 50}, "blockIO": {"weight": 500}}


def test_limits_are_unit_properties_and_files(sd, bundle):
    path, unit = names("props")
    b = bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].update(
        cgroupsPath=path, resources=LIMITS))
    sd("create", "--bundle", b, "c1", check=True)
    try:
        pid = sd.state("c1")["pid"]
        props = show(unit, "Delegate", "Slice", "MemoryMax", "MemoryLow", "TasksMax",
                     "CPUWeight", "CPUQuotaPerSecUSec", "AllowedCPUs", "IOWeight",
                     "DevicePolicy", "ControlGroup")
        assert props["Delegate"] == "yes" and props["Slice"] == "system.slice", props
        assert props["MemoryMax"] == str(64 << 20) and props["MemoryLow"] == str(32 << 20)
        assert props["TasksMax"] == "50" and props["CPUWeight"] == "59"
        assert props["CPUQuotaPerSecUSec"] == "500ms" and props["AllowedCPUs"] == "0"
        assert props["IOWeight"] == "4950" and props["DevicePolicy"] == "strict"
        d = helpers.controller_dir(pid, "memory")
        assert d.endswith(props["ControlGroup"]), (d, props)
        if helpers.UNIFIED:
            files = {"memory.max": str(64 << 20), "pids.max": "50", "cpu.weight": "59",
                     "cpu.max": "50000 100000", "cpuset.cpus": "0"}
            assert {n: helpers.read(d, n) for n in files} == files
        else:
            assert helpers.read(d, "memory.limit_in_bytes") == str(64 << 20)
        sd("update", "--memory", "96m", "--pids-limit", "60", "c1", check=True)
        props = show(unit, "MemoryMax", "MemoryLimit", "TasksMax")
        assert props["TasksMax"] == "60", props
        assert str(96 << 20) in (props["MemoryMax"], props["MemoryLimit"]), props
        assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == "60"
    finally:
        sd("delete", "--force", "c1", check=True)
    assert not unit_known(unit)
    assert not os.path.exists(f"/sys/fs/cgroup/system.slice/{unit}")


def test_a_failed_create_leaves_no_unit(sd, bundle):
    path, unit = names("failed")
    b = bundle(["true"], edit=lambda cfg: cfg["linux"].update(
        cgroupsPath=path, resources={"cpu": {"cpus": "4095"}}))
    r = sd("create", "--bundle", b, "c1")
    assert r.rc == 1 and "cpus" in r.err, r
    assert sd.ids() == []
    assert not unit_known(unit)


def test_a_refused_path_is_one_line(sd, bundle):
    b = bundle(["true"], edit=lambda cfg: cfg["linux"].update(cgroupsPath="nope:a:b"))
    r = sd("create", "--bundle", b, "c1")
    assert r.rc == 1 and "'nope' is not a slice name" in r.err, r
    assert "Traceback" not in r.err
