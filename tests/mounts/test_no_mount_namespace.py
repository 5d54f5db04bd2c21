"""A container without a mount namespace (runc allows it; runtime-tools' linux_ns_itype
uses it): its mounts land below the rootfs in our namespace and `delete` removes them."""

from __future__ import annotations

import pytest

from tests.leaks import mounts_under

pytestmark = pytest.mark.root


def test_mounts_are_removed_on_delete(ocirt, bundle):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
        c["linux"].pop("maskedPaths")
        c["linux"].pop("readonlyPaths")
    b = bundle(["sleep", "100"], edit=edit)
    ocirt("create", "--bundle", b, "c1", check=True)
    assert f"{b}/rootfs/proc" in mounts_under(b)
    ocirt("delete", "--force", "c1", check=True)
    assert mounts_under(b) == []


def test_failed_create_removes_its_mounts(ocirt, bundle):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
        c["linux"].pop("maskedPaths")
        c["linux"].pop("readonlyPaths")
    b = bundle(["no-such-program"], edit=edit)
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1
    assert mounts_under(b) == []


def test_masked_paths_need_a_mount_namespace(ocirt, bundle):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
    r = ocirt("create", "--bundle", bundle(["true"], edit=edit), "c1")
    assert r.rc == 1 and "without a private MNT namespace" in r.err
