"""SELinux and AppArmor: labels the host cannot apply are refused before anything exists
(runc's message and exit code); a mount label is ignored on hosts without SELinux, as
runc ignores it, so engines that always send one keep working."""

from __future__ import annotations

import pytest

from conformance import procfs
from ocirt.linux import lsm
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

no_selinux = pytest.mark.skipif(lsm.selinux_enabled(), reason="SELinux is enabled here")
no_apparmor = pytest.mark.skipif(lsm.apparmor_enabled(), reason="AppArmor is enabled here")
LABEL = "system_u:system_r:container_t:s0:c1,c2"


def test_mount_label_goes_where_the_filesystem_takes_one():
    assert lsm.mount_data("tmpfs", "mode=755", LABEL) == f'mode=755,context="{LABEL}"'
    assert lsm.mount_data("devpts", "", LABEL) == f'context="{LABEL}"'
    for fstype in ("proc", "sysfs", "mqueue", "cgroup", "cgroup2"):
        assert lsm.mount_data(fstype, "x=1", LABEL) == "x=1"
    assert lsm.mount_data("tmpfs", 'context="other"', LABEL) == 'context="other"'
    assert lsm.mount_data("tmpfs", "size=1k", "") == "size=1k"


@no_selinux
def test_selinux_label_without_selinux_is_refused(ocirt, bundle):
    b = bundle(["true"], edit=lambda c: c["process"].update(selinuxLabel=LABEL))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1 and "Traceback" not in r.err
    assert "selinux label is specified in config, but selinux is disabled" in r.err
    assert r.err.strip().count("\n") == 0
    assert_nothing_left(ocirt.root, "c1", b)


@no_apparmor
def test_apparmor_profile_without_apparmor_is_refused(ocirt, bundle):
    b = bundle(["true"], edit=lambda c: c["process"].update(apparmorProfile="docker-default"))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1 and "Traceback" not in r.err
    assert "apparmor profile 'docker-default'" in r.err and "not enabled" in r.err
    assert_nothing_left(ocirt.root, "c1", b)


@no_selinux
def test_mount_label_without_selinux_is_ignored(ocirt, bundle):
    b = bundle(["sh", "-c", "grep -c context= /proc/self/mountinfo; mount | grep -c ' /tmp '"],
               edit=lambda c: (c["linux"].update(mountLabel=LABEL), c["mounts"].append(
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.out.split() == ["0", "1"], r


@no_selinux
@no_apparmor
def test_exec_labels_are_checked_too(ocirt, bundle):
    ocirt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    for flag, value, text in (("--process-label", LABEL, "selinux is disabled"),
                              ("--apparmor", "docker-default", "AppArmor is not enabled")):
        r = ocirt("exec", flag, value, "c1", "true")
        assert r.rc == 255 and text in r.err and "Traceback" not in r.err, r
    assert procfs.alive(pid) and ocirt.status("c1") == "running"
    assert procfs.children(pid) == []
