"""Idmapped bind mounts: what ocirt adds to the conformance cases (MT-25..MT-28): ids
outside the mapping, failures that leave nothing behind, no fd of the prepared mount in
the container."""

from __future__ import annotations

import os

import pytest

from tests.conftest import IN_CHROOT
from tests.leaks import assert_nothing_left, processes_naming

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(IN_CHROOT, reason="idmapped mounts need a user namespace, "
                                 "which the kernel refuses to a process in a chroot")]

MAP = [{"containerID": 0, "hostID": 1000, "size": 1}]


def idmapped(src, dest="/m", options=("bind", "idmap"), uid=MAP, gid=MAP):
    def edit(cfg):
        cfg["mounts"].append({"destination": dest, "type": "bind", "source": str(src),
                              "options": list(options), "uidMappings": uid,
                              "gidMappings": gid})
    return edit


def owned(tmp_path):
    src = tmp_path / "vol"
    src.mkdir()
    for name, owner in (("root-file", (0, 0)), ("five-file", (5, 6))):
        (src / name).write_text(name)
        os.chown(src / name, *owner)
    return src


def test_ids_outside_the_mapping_are_overflow_and_unwritable(ocirt, bundle, tmp_path):
    """Only on-disk 0 is mapped (to 1000): 5:6 shows as the overflow id, and root (not
    in the mapping) cannot create files there."""
    src = owned(tmp_path)
    r = ocirt("run", "--bundle", bundle(
        ["sh", "-c", "stat -c '%n %u:%g' /m/root-file /m/five-file; touch /m/x 2>&1; "
                     "ls /proc/self/fd"], edit=idmapped(src)), "i1")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[:2] == ["/m/root-file 1000:1000", "/m/five-file 65534:65534"], r.out
    assert "Value too large" in lines[2], r.out  # EOVERFLOW: fsuid 0 has no on-disk id
    assert lines[3:] == ["0", "1", "2", "3"], r.out  # no prepared-mount fd inside
    assert not (src / "x").exists()


def test_unsupported_filesystem_fails_cleanly(ocirt, bundle, state_root):
    """sysfs cannot be idmapped: a one-line error naming the mount, and nothing left
    (no container, mount, user-namespace helper process)."""
    b = bundle(["true"], edit=idmapped("/sys/kernel"))
    r = ocirt("create", "--bundle", b, "i2")
    assert r.rc == 1
    assert "mounts[" in r.err and "(/m)" in r.err and "idmapped" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert_nothing_left(state_root, "i2", b)
    assert processes_naming(b) == []


def test_missing_source_fails_cleanly(ocirt, bundle, state_root, tmp_path):
    b = bundle(["true"], edit=idmapped(tmp_path / "no-such-dir"))
    r = ocirt("create", "--bundle", b, "i3")
    assert r.rc == 1 and "no-such-dir" in r.err and "no such file" in r.err.lower(), r.err
    assert_nothing_left(state_root, "i3", b)


def test_crun_inline_option_as_podman_passes_it(ocirt, bundle, tmp_path):
    """`podman run -v SRC:DST:idmap=uids=...;gids=...` reaches the runtime as this option."""
    src = owned(tmp_path)

    def edit(cfg):
        cfg["mounts"].append({"destination": "/m", "type": "bind", "source": str(src),
                              "options": ["rbind", "idmap=uids=0-1000-1#5-1005-1;gids=0-2000-10"]})
    r = ocirt("run", "--bundle", bundle(["stat", "-c", "%n %u:%g", "/m/root-file",
                                         "/m/five-file"], edit=edit), "i4")
    assert r.rc == 0, r
    assert r.out.splitlines() == ["/m/root-file 1000:2000", "/m/five-file 1005:2006"], r.out
