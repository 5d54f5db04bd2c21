"""Running SIF images directly: `run --image`, a root.path naming a .sif, and the
verification policy that refuses unsigned or tampered images."""

from __future__ import annotations

import json
import os

import pytest

from conformance.bundle import default_config
from tests.leaks import mounts_under
from tests.sif.helpers import fixture

pytestmark = pytest.mark.root

def loop_devices() -> list[str]:
    try:
        return [d for d in os.listdir("/sys/block") if d.startswith("loop") and
                os.path.getsize(f"/sys/block/{d}/size") and
                open(f"/sys/block/{d}/size").read().strip() != "0"]
    except OSError:
        return []


def test_run_image_prints_the_runscript(ocirt):
    before = loop_devices()
    r = ocirt("run", "--image", fixture("a-minimal-busybox.sif"), "s1")
    assert r.rc == 0, r
    assert "runscript: hello from SIF" in r.out
    assert ocirt.ids() == []
    assert mounts_under(ocirt.root) == [] and loop_devices() == before
    assert os.listdir(os.path.join(ocirt.root, "@sif-bundles")) == []


def test_arguments_after_the_id_go_to_the_runscript(ocirt):
    r = ocirt("run", "--image", fixture("a-minimal-busybox.sif"), "s1", "--", "one", "two")
    assert r.rc == 0 and "args: one two" in r.out, r


def test_policy_refuses_an_unsigned_image(ocirt):
    key = fixture("keys/ecdsa-p256-public.pem")
    r = ocirt("run", "--image", fixture("a-minimal-busybox.sif"), "--key", key, "s1")
    assert r.rc == 1 and "verification failed" in r.err and "signature not found" in r.err
    assert ocirt.ids() == [] and mounts_under(ocirt.root) == []


def test_policy_accepts_the_signed_image_and_refuses_a_tampered_one(ocirt):
    key = fixture("keys/ecdsa-p256-public.pem")
    r = ocirt("run", "--image", fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"),
              "--key", key, "s1")
    assert r.rc == 0 and "hello from SIF" in r.out, r
    r = ocirt("run", "--image", fixture("g-tampered-dsse-ecdsa-partition.sif"), "--key", key,
              "s2")
    assert r.rc == 1 and "integrity compromised" in r.err
    assert mounts_under(ocirt.root) == []


def test_root_path_naming_a_sif_image(ocirt, tmp_path):
    config = default_config(["sh", "-c", "head -1 /.singularity.d/runscript; "
                                         "touch /x 2>&1 || true"])
    config["root"] = {"path": fixture("a-minimal-busybox.sif")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ocirt("create", "--bundle", str(tmp_path), "s1", check=True)
    state = ocirt.state("s1")
    # the image's shared mount (one per image and state root) is the container's root
    assert state["rootfs"].startswith(os.path.join(ocirt.root, "@images") + "/")
    assert mounts_under(state["rootfs"]) == [state["rootfs"]]  # mounted while it lives
    ocirt("start", "s1", check=True)
    assert ocirt.wait_status("s1", "stopped")
    ocirt("delete", "s1", check=True)
    assert mounts_under(ocirt.root) == []


def test_key_flag_checks_a_root_path_sif(ocirt, tmp_path):
    """--key applies to a root.path naming a .sif as to --image (oci.conf can pass it)."""
    key = fixture("keys/ecdsa-p256-public.pem")
    for name, image in (("ok", "a-minimal-busybox-signed-dsse-ecdsa-p256.sif"),
                        ("bad", "a-minimal-busybox.sif")):
        bundle = tmp_path / name
        bundle.mkdir()
        config = default_config(["sh", "-c", "echo inside"])
        config["root"] = {"path": fixture(image)}
        (bundle / "config.json").write_text(json.dumps(config))
        r = ocirt("run", "--key", key, "--bundle", str(bundle), name)
        if name == "ok":
            assert r.rc == 0 and "inside" in r.out, r
        else:
            assert r.rc == 1 and "signature not found" in r.err, r
            assert "inside" not in r.out
    assert ocirt.ids() == [] and mounts_under(ocirt.root) == []
