"""What each lifecycle command imports, counted on real containers (bench/count.py).

Engines run the runtime for every create, start, state, kill and delete, so an import a
change drags onto one of these paths costs every container. These modules were each
measured on a path that did not need them (ocirt.sif.image and dataclasses: ~30 ms per
create; ctypes and the planner: ~3 ms per delete; `resource`, a shared library loaded for
prlimit alone: ~0.3 ms per create and exec; for exec, the create and run code, the
init's root filesystem stages and the cgroup managers: ~3 ms per exec).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNTER = os.path.join(REPO, "bench", "count.py")

# Never on the path of a lifecycle command on a plain bundle.
NOWHERE = {"typing", "dataclasses", "hashlib", "inspect", "re", "enum", "jsonschema", "resource",
           "ocirt.sif.image", "ocirt.sif.bundle", "ocirt.sif.format"}
# Not on the short commands either (create needs them for the init).
NOT_SHORT = NOWHERE | {"ctypes", "ocirt.linux.libc", "ocirt.spec.plan",
                       "ocirt.runtime.create", "ocirt.process.init"}
# Not on exec's path (it needs ctypes, the planner and the child process code).
NOT_EXEC = NOWHERE | {"ocirt.runtime.create", "ocirt.runtime.run", "ocirt.runtime.start",
                      "ocirt.process.init", "ocirt.fs.rootfs", "ocirt.fs.devices",
                      "ocirt.cgroups.base", "ocirt.cgroups.v1", "ocirt.cgroups.v2",
                      "ocirt.cgroups.resources", "ocirt.cgroups.systemd"}


def loaded(ocirt, tmp_path, *args: str) -> set[str]:
    """Modules of the command's own process at its exit; the command must succeed."""
    with open(ocirt.binary, "rb") as f:
        python = f.readline().decode()[2:].split()
    report = str(tmp_path / "count.json")
    # stderr to a file, not a pipe: a container's init inherits it and keeps it open
    with open(tmp_path / "count.err", "w+") as err:
        proc = subprocess.run([*python, COUNTER, report, ocirt.binary, "--root", ocirt.root,
                               *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60)
        err.seek(0)
        assert proc.returncode == 0, err.read()
    with open(report) as f:
        return set(json.load(f)["modules"])


def test_lifecycle_commands_import_only_what_they_use(ocirt, bundle, tmp_path):
    b = bundle(["true"])
    assert not loaded(ocirt, tmp_path, "create", "--bundle", b, "c1") & NOWHERE
    assert not loaded(ocirt, tmp_path, "state", "c1") & NOT_SHORT
    assert not loaded(ocirt, tmp_path, "start", "c1") & NOT_SHORT
    assert ocirt.wait_status("c1", "stopped")
    # a stopped container's delete: no process to wait for, so no select either
    assert not loaded(ocirt, tmp_path, "delete", "c1") & (NOT_SHORT | {"select"})
    assert ocirt.ids() == []
    s = bundle(["sleep", "1000"])
    ocirt("run", "-d", "--bundle", s, "c2", check=True)
    assert not loaded(ocirt, tmp_path, "exec", "c2", "/bin/true") & NOT_EXEC
    assert not loaded(ocirt, tmp_path, "exec", "-d", "c2", "/bin/true") & NOT_EXEC
    assert not loaded(ocirt, tmp_path, "--log", str(tmp_path / "log.json"), "--log-format",
                      "json", "kill", "c2", "KILL") & NOT_SHORT
    assert ocirt.wait_status("c2", "stopped")
    ocirt("delete", "c2", check=True)
