"""Running SIF images directly: `run --image`, a root.path naming a .sif, and the
verification policy that refuses unsigned or tampered images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from conformance.bundle import default_config
from tests.leaks import mounts_under
from tests.sif.helpers import fixture, wait_detached

# run --image names the container's cgroup after its ID (at a v1 hierarchy's root):
# an ID of this process's own, so that no other run of the suite shares it.
CID = f"s1-{os.getpid()}"

pytestmark = pytest.mark.root

def test_run_image_prints_the_runscript(ocirt, tmp_path, images_like):
    for n, source in enumerate(images_like("a-minimal-busybox.sif")):
        # A private copy: the loop device it backs is ours to find (the machine is
        # shared, and other sessions attach loop devices of their own meanwhile).
        image = str(tmp_path / f"a{n}.sif")
        shutil.copyfile(source, image)
        r = ocirt("run", "--image", image, CID)
        assert r.rc == 0, r
        assert "runscript: hello from SIF" in r.out, source
        assert ocirt.ids() == []
        assert mounts_under(ocirt.root) == [] and wait_detached(image)
        assert os.listdir(os.path.join(ocirt.root, "@sif-bundles")) == []


UNVERIFIED = "running an unverified SIF image (no --key given and no /etc/ocirt/sif-policy.json)"


@pytest.mark.skipif(os.path.exists("/etc/ocirt/sif-policy.json"),
                    reason="this host has a SIF policy")
def test_an_unverified_image_runs_with_one_warning_line(ocirt):
    image = fixture("a-minimal-busybox.sif")
    r = ocirt("run", "--image", image, CID)
    assert r.rc == 0 and "hello from SIF" in r.out, r
    warnings = [line for line in r.err.splitlines() if "level=warning" in line]
    assert len(warnings) == 1 and f"{image}: {UNVERIFIED}" in warnings[0], r.err
    # Verified with a key: nothing to warn about.
    r = ocirt("run", "--image", fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"),
              "--key", fixture("keys/ecdsa-p256-public.pem"), "s2")
    assert r.rc == 0 and "level=warning" not in r.err, r


def test_a_policy_that_requires_nothing_is_followed_without_a_warning(monkeypatch):
    """`"require": false` in the system policy is the admin's say-so: no warning."""
    from ocirt import log
    from ocirt.runtime import image
    from ocirt.sif.policy import Policy

    said: list[str] = []
    monkeypatch.setattr(log, "warning", said.append)
    image.warn_unverified("x.sif", Policy(require=False))
    image.warn_unverified("x.sif", Policy(keys=["k.pem"]))
    assert said == []
    image.warn_unverified("x.sif", None)
    assert said == [f"x.sif: {UNVERIFIED}; its signatures were not checked"]


def test_writable_tmpfs_gives_a_writable_root_and_leaves_the_image_alone(ocirt, tmp_path):
    image = str(tmp_path / "a.sif")
    with open(fixture("a-minimal-busybox.sif"), "rb") as src, open(image, "wb") as dst:
        dst.write(src.read())
    os.chmod(image, 0o644)
    with open(image, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    assert ocirt("create", "--writable-tmpfs", "--image", image, CID).rc == 0
    r = ocirt("exec", CID, "sh", "-c", "touch /etc/new /tmp/new /new && echo written && "
                                        "echo x >> /etc/passwd && ls -ld /etc /tmp")
    assert r.rc == 0 and "written" in r.out, r
    assert ocirt("delete", "--force", CID).rc == 0
    with open(image, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before
    assert mounts_under(ocirt.root) == []
    assert os.listdir(os.path.join(ocirt.root, "@sif-bundles")) == []
    # Without it the root stays read-only.
    assert ocirt("create", "--image", image, "s2").rc == 0
    r = ocirt("exec", "s2", "touch", "/etc/new")
    assert r.rc != 0 and "Read-only file system" in r.out + r.err, r
    assert ocirt("delete", "--force", "s2").rc == 0


def test_writable_tmpfs_needs_an_image(ocirt, bundle):
    r = ocirt("run", "--writable-tmpfs", "--bundle", bundle(["true"]), CID)
    assert r.rc == 1 and "--writable-tmpfs needs --image" in r.err, r


def test_arguments_after_the_id_go_to_the_runscript(ocirt, images_like):
    for source in images_like("a-minimal-busybox.sif"):
        r = ocirt("run", "--image", source, CID, "--", "one", "two")
        assert r.rc == 0 and "args: one two" in r.out, (source, r)


def test_policy_refuses_an_unsigned_image(ocirt):
    key = fixture("keys/ecdsa-p256-public.pem")
    r = ocirt("run", "--image", fixture("a-minimal-busybox.sif"), "--key", key, CID)
    assert r.rc == 1 and "verification failed" in r.err and "signature not found" in r.err
    assert ocirt.ids() == [] and mounts_under(ocirt.root) == []


def test_policy_accepts_the_signed_image_and_refuses_a_tampered_one(ocirt):
    key = fixture("keys/ecdsa-p256-public.pem")
    r = ocirt("run", "--image", fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"),
              "--key", key, CID)
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
    ocirt("create", "--bundle", str(tmp_path), CID, check=True)
    state = ocirt.state(CID)
    # the image's shared mount (one per image and state root) is the container's root
    assert state["rootfs"].startswith(os.path.join(ocirt.root, "@images") + "/")
    assert mounts_under(state["rootfs"]) == [state["rootfs"]]  # mounted while it lives
    ocirt("start", CID, check=True)
    assert ocirt.wait_status(CID, "stopped")
    ocirt("delete", CID, check=True)
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


def test_delete_force_removes_the_unrenamed_mark_of_a_killed_create_image(ocirt):
    """A `create --image` SIGKILLed between writing its creator mark's temporary file
    and renaming it leaves `ID.creator.PID.tmp` in @sif-bundles: `delete --force ID`
    removes it once that PID is gone, and keeps one whose writer still runs."""
    import subprocess

    bundles = os.path.join(ocirt.root, "@sif-bundles")
    os.makedirs(bundles, mode=0o700)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = os.path.join(bundles, f"{CID}.creator.{gone.pid}.tmp")
    live = os.path.join(bundles, f"{CID}.creator.{os.getpid()}.tmp")
    for path in (dead, live):
        with open(path, "w") as f:
            f.write("[1, 2]")
    r = ocirt("delete", "--force", CID)
    assert r.rc == 0 and r.err == "", r
    assert sorted(os.listdir(bundles)) == [os.path.basename(live)]
