"""The v2 manager on the real cgroup2 mount: the controller-less unified hierarchy of a
hybrid host, where the core files work (cgroup.procs, cgroup.freeze, cgroup.kill,
cgroup.events, and the eBPF device filter), or a unified host's, where the pids limit
is passed down and set too."""

from __future__ import annotations

import os
import subprocess

import pytest

from ocirt.cgroups import bpf, fs
from ocirt.cgroups.detect import detect
from ocirt.cgroups.devices import default_rules
from ocirt.cgroups.v2 import V2Manager
from ocirt.errors import OcirtError
from tests.cgroups import helpers

pytestmark = pytest.mark.root


@pytest.fixture
def cgroup_path():
    layout = detect()
    if layout.unified is None:
        pytest.skip("no cgroup2 hierarchy on this host")
    # on a v2 host our own cgroup holds processes: nothing below it gets a controller
    own = helpers.relative_base("", layout.unified.own_dir())
    base = os.path.join(own, f"ocirt-test-v2-{os.getpid()}")
    yield os.path.join(base, "c1")
    assert not os.path.exists(base), "the manager left its cgroup behind"


def test_v2_manager_lifecycle(cgroup_path):
    mgr = V2Manager(cgroup_path)
    mgr.default_rules = default_rules()
    mgr.create()
    assert mgr.made == [os.path.dirname(cgroup_path), cgroup_path]
    proc = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: mgr.add(os.getpid()))
    try:
        assert mgr.pids() == [proc.pid]
        mgr.apply({"devices": [{"allow": False, "access": "rwm"}]})
        assert bpf.attached_count(cgroup_path) == 1
        if "pids" in fs.read(detect().unified.mountpoint, "cgroup.controllers").split():
            mgr.apply({"pids": {"limit": 5}})
            assert fs.read(cgroup_path, "pids.max").strip() == "5"
        else:  # a hybrid host's cgroup2 mount has no controllers: create fails and says so
            with pytest.raises(OcirtError, match="linux.resources.pids.limit: controller "
                                                 "'pids' not available in /"):
                mgr.apply({"pids": {"limit": 5}})
        mgr.freeze()
        assert mgr.is_frozen()
        assert fs.read_keyed(cgroup_path, "cgroup.events")["frozen"] == 1
        again = V2Manager.from_state(mgr.state())
        assert again.is_frozen() and again.pids() == [proc.pid]
        stats = again.stats()
        assert stats["pids"]["current"] == 1
        assert stats["cpu"]["usage"]["total"] >= 0
        again.thaw()
        assert not mgr.is_frozen()
        assert mgr.kill_all()
        assert proc.wait(timeout=10) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mgr.destroy()
    assert mgr.made == []
