"""Absolute cgroupsPath values, run inside a private mount + cgroup namespace whose
hierarchies are remounted from inside (conformance.sandbox, as the shared oci-validate
and engine-smoke tools do): the container's cgroup must land below the namespace's
root on the host (our own cgroup; on a v2 host a cgroup beside it, since ours holds
processes), whatever absolute path the config names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conformance.sandbox import Sandbox
from tests.cgroups import helpers
from tests.conftest import IN_CHROOT

pytestmark = pytest.mark.root


@pytest.fixture
def sandbox():
    box = Sandbox()
    box.start()
    yield box
    box.close()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
@pytest.mark.skipif(IN_CHROOT, reason="a private mount namespace needs / to be a mount point")
def test_absolute_path_inside_a_cgroup_namespace(ocirt_bin, bundle, tmp_path, sandbox):
    name = f"ocirt-test-abs-{os.getpid()}"
    b = bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].update(
        cgroupsPath=f"/{name}/c1", resources={"pids": {"limit": 9}}))

    def rt(*args: str) -> subprocess.CompletedProcess:
        """The runtime in the sandbox; output through files, since the created
        container keeps the stdio it was given open."""
        with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
            done = subprocess.run([*sandbox.prefix(), ocirt_bin, "--root",
                                   str(tmp_path / "state"), *args], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=err, timeout=60)
            out.seek(0)
            err.seek(0)
            done.stdout, done.stderr = out.read(), err.read()
        return done

    try:
        r = rt("create", "--bundle", b, "c1")
        assert r.returncode == 0, r.stderr
        pid = json.loads(rt("state", "c1").stdout)["pid"]
        # as the container sees it (namespace view): exactly the configured path
        inside = sandbox.run(["cat", f"/proc/{pid}/cgroup"]).stdout
        assert f":{helpers.key_of('pids')}:/{name}/c1" in inside, inside
        # as the host sees it: below the namespace's root in every hierarchy
        for key, directory in helpers.dirs_of(pid).items():
            assert directory == os.path.join(sandbox.root_dir(key), name, "c1"), key
        assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == "9"
    finally:
        r = rt("delete", "--force", "c1")
    assert r.returncode == 0, r.stderr
    assert not [key for key in helpers.mounts()
                if os.path.exists(os.path.join(sandbox.root_dir(key), name))]
