"""AppArmor applied for real (on a host where it is on, such as the test guest booted by
`python -m tests.hosts`): a profile that denies one file, loaded with apparmor_parser,
confines the container's process and an exec'd one, as seen from inside (the read is
refused, /proc/self/attr/current names it) and from the host (/proc/<pid>/attr/current);
a profile that is not loaded is refused before anything exists."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ocirt.linux import lsm
from tests.leaks import assert_nothing_left

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    not lsm.apparmor_enabled() or shutil.which("apparmor_parser") is None,
    reason="needs AppArmor on and apparmor_parser (python -m tests.hosts run boots a host "
           "with both)")]

PROFILE = "ocirt-test-deny-passwd"
# Everything allowed but reading /etc/passwd (as the container sees its own root).
PROFILE_TEXT = f"""profile {PROFILE} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  ptrace,
  unix,
  mount,
  umount,
  pivot_root,
  deny /etc/passwd r,
}}
"""
PROBE = ("cat /proc/self/attr/current; "
         "cat /etc/passwd >/dev/null 2>&1 && echo PASSWD-READ || echo PASSWD-DENIED; "
         "cat /etc/group >/dev/null && echo GROUP-READ")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("apparmor") / PROFILE
    path.write_text(PROFILE_TEXT)
    subprocess.run(["apparmor_parser", "--replace", str(path)], check=True)
    yield PROFILE
    subprocess.run(["apparmor_parser", "--remove", str(path)], check=True)


def test_the_profile_confines_the_container(ocirt, bundle, profile):
    b = bundle(["sh", "-c", PROBE], edit=lambda c: c["process"].update(
        apparmorProfile=profile))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert f"{profile} (enforce)" in r.out, r
    assert "PASSWD-DENIED" in r.out and "GROUP-READ" in r.out, r


def test_without_a_profile_the_file_is_readable(ocirt, bundle, profile):
    r = ocirt("run", "--bundle", bundle(["sh", "-c", PROBE]), "c1")
    assert r.rc == 0 and "PASSWD-READ" in r.out, r
    assert profile not in r.out


def test_host_sees_the_profile_and_exec_gets_one(ocirt, bundle, profile):
    b = bundle(["sleep", "100"], edit=lambda c: c["process"].update(apparmorProfile=profile))
    ocirt("run", "-d", "--bundle", b, "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    with open(f"/proc/{pid}/attr/current") as f:
        assert f.read().strip() == f"{profile} (enforce)"
    r = ocirt("exec", "--apparmor", profile, "c1", "sh", "-c", PROBE)
    assert r.rc == 0 and f"{profile} (enforce)" in r.out and "PASSWD-DENIED" in r.out, r
    r = ocirt("exec", "--apparmor", "unconfined", "c1", "sh", "-c", PROBE)
    assert r.rc == 0 and "unconfined" in r.out and "PASSWD-READ" in r.out, r


def test_a_profile_that_is_not_loaded_is_refused(ocirt, bundle):
    b = bundle(["true"], edit=lambda c: c["process"].update(apparmorProfile="ocirt-nosuch"))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1 and "Traceback" not in r.err, r
    assert "apparmor profile 'ocirt-nosuch' is not loaded" in r.err, r
    assert r.err.strip().count("\n") == 0
    assert_nothing_left(ocirt.root, "c1", b)
