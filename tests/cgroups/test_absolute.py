"""Absolute cgroupsPath values, run inside a private mount + cgroup namespace whose
hierarchies are remounted so that "/" of each is our own cgroup (as the shared
oci-validate and engine-smoke tools do): the container's cgroup must land below our own
cgroup on the host, whatever absolute path the config names."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess

import pytest

from tests.cgroups import helpers
from tests.conftest import IN_CHROOT

pytestmark = pytest.mark.root


def sandbox_script(commands: str) -> str:
    lines = ["set -e", "umount -R -l /sys/fs/cgroup",
             "mount -n -t tmpfs -o mode=755,nosuid,nodev,noexec ocirt-test /sys/fs/cgroup"]
    for key, (mountpoint, _) in sorted(helpers.mounts().items()):
        fstype = "cgroup2" if key == "" else "cgroup"
        opts = "nosuid,nodev,noexec" + (f",{key}" if key else "")
        lines += [f"mkdir -p {shlex.quote(mountpoint)}",
                  f"mount -n -t {fstype} -o {shlex.quote(opts)} {fstype} "
                  f"{shlex.quote(mountpoint)}"]
    return "\n".join(lines + [commands])


def read_until(proc: subprocess.Popen, marker: str) -> str:
    """Lines up to `marker`; the sandbox's stderr if it ends before (never spins on EOF)."""
    lines = []
    while True:
        line = proc.stdout.readline()
        if line == marker:
            return "".join(lines)
        if not line:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the sandbox ended early: {''.join(lines)}{err}")
        lines.append(line)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
@pytest.mark.skipif(IN_CHROOT, reason="a private mount namespace needs / to be a mount point")
def test_absolute_path_inside_a_cgroup_namespace(ocirt_bin, bundle, tmp_path):
    name = f"ocirt-test-abs-{os.getpid()}"
    b = bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].update(
        cgroupsPath=f"/{name}/c1", resources={"pids": {"limit": 9}}))
    rt = f"{shlex.quote(ocirt_bin)} --root {shlex.quote(str(tmp_path / 'state'))}"
    commands = (f"{rt} create --bundle {shlex.quote(b)} c1\n"
                f"{rt} state c1\n"
                f"echo END-STATE\n"
                "pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' <<<\"$(" + rt + " state c1)\")\n"
                "cat /proc/$pid/cgroup\n"
                "echo END-CGROUP\n"
                "read line\n"
                f"{rt} delete --force c1\n")
    proc = subprocess.Popen(["unshare", "--mount", "--cgroup", "--propagation", "private",
                             "--", "bash", "-c", sandbox_script(commands)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        state = read_until(proc, "END-STATE\n")
        inside = read_until(proc, "END-CGROUP\n")
        pid = json.loads(state)["pid"]
        # as the container sees it (namespace view): exactly the configured path
        assert f":{helpers.key_of('pids')}:/{name}/c1" in inside, inside
        # as the host sees it: below our own cgroup in every hierarchy
        own = helpers.membership()
        for key, path in helpers.membership(pid).items():
            assert path == os.path.join(own[key], name, "c1"), (key, path)
        pids_dir = helpers.controller_dir(pid, "pids")
        assert helpers.read(pids_dir, "pids.max") == "9"
    finally:
        out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err
    assert helpers.leftover_dirs(name) == []
