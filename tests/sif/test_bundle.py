"""SIF -> OCI bundle: mounted in place (loop device as root, squashfuse otherwise) or
unpacked, run with `ocirt run`, writable sessions, and nothing left behind when
something fails or after `unbundle`."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.sif.helpers import (
    fixture,
    loop_backings,
    mounts_under,
    processes_mentioning,
    read_bytes,
    wait_detached,
)

pytestmark = pytest.mark.root


def _mount_entry(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == os.path.realpath(path):
                return fields
    raise AssertionError(f"nothing mounted at {path}")


def _run(ocirt, bundle: str, cid: str = "t1") -> str:
    res = ocirt("run", "--bundle", bundle, cid)
    assert res.rc == 0, res
    return res.out


def _sha(path: str) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


def test_bundle_mounts_in_place_and_runs(tmp_path, copy_fixture, sif, ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", image, bundle, check=True)
    fields = _mount_entry(os.path.join(bundle, "rootfs"))
    assert fields[fields.index("-") + 1] == "squashfs"
    assert "ro" in fields[5].split(",") and "nodev" in fields[5] and "nosuid" in fields[5]
    device = fields[fields.index("-") + 2].removeprefix("/dev/")
    assert loop_backings()[device] == image
    with open(f"/sys/block/{device}/loop/offset") as f:
        assert int(f.read()) == 32768, "the partition's offset in the SIF file"
    with open(f"/sys/block/{device}/loop/sizelimit") as f:
        assert int(f.read()) == 1044480
    with open(f"/sys/block/{device}/loop/autoclear") as f:
        assert f.read().strip() == "1"
    config = json.loads(read_bytes(os.path.join(bundle, "config.json")))
    assert config["process"]["args"] == ["/.singularity.d/actions/run"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["annotations"]["Author"] == "ocirt-test-vectors", "labels.json"
    out = _run(ocirt, bundle)
    assert out.splitlines() == ["runscript: hello from SIF", "args: "]
    res = sif("unbundle", bundle)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(bundle)
    assert wait_detached(image), f"{device} still attached to {image}"


def test_arguments_environment_and_a_read_only_root(tmp_path, copy_fixture, sif,
                                                    ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", image, bundle, "--", "one", "two", check=True)
    assert _run(ocirt, bundle).splitlines()[-1] == "args: one two"
    sif("unbundle", bundle, check=True)
    script = ('echo "G=$GREETING C=$SINGULARITY_CONTAINER"; touch /new 2>/dev/null '
              '|| echo "root is read-only"; echo tmp > /tmp/x && cat /tmp/x')
    sif("bundle", "--exec", image, bundle, "--", "/bin/sh", "-c", script, check=True)
    out = _run(ocirt, bundle, "t2").splitlines()
    assert out == [f"G=hello from SIF C={image}", "root is read-only", "tmp"]
    sif("unbundle", bundle, check=True)


def test_unpack(tmp_path, copy_fixture, sif, ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", "--unpack", image, bundle, check=True)
    rootfs = os.path.join(bundle, "rootfs")
    assert not mounts_under(rootfs)
    assert stat.S_ISREG(os.lstat(os.path.join(rootfs, "bin", "busybox")).st_mode)
    assert os.path.islink(os.path.join(rootfs, "singularity"))
    assert json.loads(read_bytes(os.path.join(bundle, "config.json")))["root"]["readonly"] \
        is False
    assert _run(ocirt, bundle).splitlines()[0] == "runscript: hello from SIF"
    sif("unbundle", bundle, check=True)
    assert not os.path.exists(bundle)


def test_writable_tmpfs_leaves_the_image_alone(tmp_path, copy_fixture, sif, ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    before = _sha(image)
    bundle = str(tmp_path / "b")
    sif("bundle", "--writable-tmpfs", "--exec", image, bundle, "--", "/bin/sh", "-c",
        "echo written > /etc/new && cat /etc/new && rm /bin/ls && echo removed", check=True)
    assert _mount_entry(os.path.join(bundle, "rootfs"))[-3] == "overlay"
    assert _run(ocirt, bundle).splitlines() == ["written", "removed"]
    sif("unbundle", bundle, check=True)
    assert _sha(image) == before


def test_writable_overlay_partition_persists(tmp_path, copy_fixture, sif) -> None:
    image = copy_fixture("b-multi-object-overlay.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", "--writable", image, bundle, check=True)
    rootfs = os.path.join(bundle, "rootfs")
    assert os.path.exists(os.path.join(rootfs, ".singularity.d", "runscript"))
    with open(os.path.join(rootfs, "kept.txt"), "w") as f:
        f.write("kept across sessions\n")
    sif("unbundle", bundle, check=True)
    sif("bundle", "--writable", image, bundle, check=True)
    assert read_bytes(os.path.join(rootfs, "kept.txt")) == b"kept across sessions\n"
    sif("unbundle", bundle, check=True)
    sif("bundle", image, bundle, check=True)  # read-only: the overlay is not used
    assert not os.path.exists(os.path.join(rootfs, "kept.txt"))
    sif("unbundle", bundle, check=True)


def test_fuse_mount_as_root(tmp_path, copy_fixture, sif, ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", "--fuse", image, bundle, check=True)
    fields = _mount_entry(os.path.join(bundle, "rootfs"))
    assert fields[fields.index("-") + 1] == "fuse.squashfuse"
    assert _run(ocirt, bundle).splitlines()[0] == "runscript: hello from SIF"
    sif("unbundle", bundle, check=True)  # the leak check sees no squashfuse left


# --- failures leave nothing behind -------------------------------------------------------

def test_refused_bundles_leave_nothing(tmp_path, copy_fixture, sif, pem_keys) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "mine").write_text("keep me")
    res = sif("bundle", image, str(bundle))
    assert res.returncode == 1 and "not empty" in res.stderr
    assert os.listdir(bundle) == ["mine"]
    fresh = str(tmp_path / "fresh")
    res = sif("bundle", "--verify", "--key", pem_keys["p256"][1], image, fresh)
    assert res.returncode == 1 and "signature not found for object group 1" in res.stderr
    res = sif("bundle", "--writable", image, fresh)
    assert res.returncode == 1 and "no ext3 overlay partition" in res.stderr
    assert not os.path.exists(fresh)


def test_broken_partitions_leave_nothing(tmp_path, copy_fixture, sif) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    with open(image, "r+b") as f:
        f.seek(32768 + 28)
        f.write(b"\x09\x00")  # right magic, squashfs major version 9: the kernel refuses
    res = sif("bundle", image, bundle)
    assert res.returncode == 1 and "mount squashfs" in res.stderr
    assert not os.path.exists(bundle)
    with open(image, "r+b") as f:
        f.seek(32768)
        f.write(b"junk")
    res = sif("bundle", image, bundle)
    assert res.returncode == 1 and "no squashfs file system at offset 32768" in res.stderr
    assert not os.path.exists(bundle)


def test_a_failure_after_mounting_undoes_the_mount(tmp_path, copy_fixture, sif) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    meta = tmp_path / "oci-config.json"
    meta.write_text('{"config": {"Env": ["A=1"]}}')
    sif("add", "--datatype", "json", image, str(meta), check=True)
    bundle = str(tmp_path / "b")
    res = sif("bundle", image, bundle)
    assert res.returncode == 1 and "neither Entrypoint nor Cmd" in res.stderr
    assert not os.path.exists(bundle)
    sif("bundle", image, bundle, "--", "/bin/true", check=True)
    sif("unbundle", bundle, check=True)


def test_unbundle_after_the_container_ran_and_twice(tmp_path, copy_fixture, sif,
                                                    ocirt) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", image, bundle, check=True)
    res = ocirt("create", "--bundle", bundle, "busy")
    assert res.rc == 0, res
    assert sif("unbundle", bundle).returncode == 0, "a lazy unmount when busy"
    ocirt("delete", "--force", "busy")
    res = sif("unbundle", bundle)
    assert res.returncode == 1 and "not a bundle made by" in res.stderr


def test_a_forged_record_is_refused(tmp_path, copy_fixture, sif) -> None:
    """unbundle unmounts and removes what the record lists: only inside the bundle, and
    only from a record the caller wrote."""
    image = copy_fixture("a-minimal-busybox.sif")
    bundle = str(tmp_path / "b")
    sif("bundle", image, bundle, check=True)
    record_path = os.path.join(bundle, ".ocirt-sif.json")
    record = json.loads(read_bytes(record_path))
    forged = json.loads(json.dumps(record))
    forged["mounts"]["steps"].insert(0, {"kind": "tree", "path": str(tmp_path / "victim")})
    (tmp_path / "victim").mkdir()
    with open(record_path, "w") as f:
        json.dump(forged, f)
    res = sif("unbundle", bundle)
    assert res.returncode == 1 and "outside the bundle" in res.stderr
    assert (tmp_path / "victim").is_dir()
    os.chmod(record_path, 0o666)
    res = sif("unbundle", bundle)
    assert res.returncode == 1 and "refusing to act on it" in res.stderr
    with open(record_path, "w") as f:
        json.dump(record, f)
    os.chmod(record_path, 0o644)
    sif("unbundle", bundle, check=True)


# --- without privileges: squashfuse ------------------------------------------------------

def _unprivileged_user() -> str:
    try:
        pwd.getpwnam("ocirt-test")
    except KeyError:
        pytest.skip("no ocirt-test user (contrib/setup.sh creates it)")
    if shutil.which("squashfuse") is None:
        pytest.skip("squashfuse is not installed")
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        pytest.skip("/dev/fuse is not usable by unprivileged users here (contrib/setup.sh "
                    "gives it mode 0666, as udev does)")
    return "ocirt-test"


@pytest.fixture
def user_home() -> Iterator[tuple[str, pwd.struct_passwd]]:
    """A directory the unprivileged user owns and can reach (pytest's tmp_path is
    root-only), checked for leftovers and removed afterwards."""
    import tempfile

    user = _unprivileged_user()
    entry = pwd.getpwnam(user)
    reach = subprocess.run(["runuser", "-u", user, "--", "test", "-x", sys.executable])
    if reach.returncode != 0:
        pytest.skip(f"{user} cannot run {sys.executable} (the checkout lies in a directory "
                    "only root may enter)")
    home = tempfile.mkdtemp(prefix="ocirt-sif-user-")
    os.chmod(home, 0o755)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        yield home, entry
    finally:
        from ocirt.linux import libc
        from ocirt.linux.consts import MNT_DETACH

        leftovers = mounts_under(home)
        for point in sorted(leftovers, reverse=True):
            libc.umount(point, MNT_DETACH)  # clean up what a failed test left, then fail
        shutil.rmtree(home, ignore_errors=True)
    assert not leftovers, f"mounts left behind: {leftovers}"
    assert not processes_mentioning(home), processes_mentioning(home)


def test_unprivileged_run_image_writable_tmpfs_can_write_etc_and_tmp(user_home, ocirt_bin):
    """Rootless `create --image --writable-tmpfs`: under a single-uid mapping the image's
    root-owned /etc and /tmp are root's inside (not nobody's) and writable, and the image
    and the host are left as they were."""
    if shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed")
    home, entry = user_home
    image = os.path.join(home, "a.sif")
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    os.chown(image, entry.pw_uid, entry.pw_gid)
    before = hashlib.sha256(read_bytes(image)).hexdigest()
    run_dir = os.path.join(home, "run")
    os.mkdir(run_dir, 0o700)
    os.chown(run_dir, entry.pw_uid, entry.pw_gid)
    rt = f"{ocirt_bin} --root {home}/state"
    script = (f"{rt} create --writable-tmpfs --image {image} w1 2>/dev/null && "
              f"{rt} exec w1 sh -c 'stat -c \"%U %n\" /etc /tmp; touch /etc/new /tmp/new && "
              f"echo written'; {rt} delete --force w1; echo deleted=$?")
    res = subprocess.run(["runuser", "-u", entry.pw_name, "--", "env",
                          f"XDG_RUNTIME_DIR={run_dir}", "sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.split("\n")[:4] == ["root /etc", "root /tmp", "written", "deleted=0"], \
        res.stdout + res.stderr
    assert hashlib.sha256(read_bytes(image)).hexdigest() == before
    assert os.listdir(os.path.join(home, "state", "@sif-bundles")) == []
    assert not processes_mentioning(home)


def test_unprivileged_squashfuse_mount(user_home, sif) -> None:
    home, entry = user_home
    user = entry.pw_name
    image = os.path.join(home, "a.sif")
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    os.chown(image, entry.pw_uid, entry.pw_gid)
    bundle = os.path.join(home, "b")
    res = sif("bundle", image, bundle, user=user)
    assert res.returncode == 0, res.stderr
    rootfs = os.path.join(bundle, "rootfs")
    fields = _mount_entry(rootfs)
    assert fields[fields.index("-") + 1] == "fuse.squashfuse"
    assert f"user_id={entry.pw_uid}" in fields[-1]
    seen = subprocess.run(["runuser", "-u", user, "--", "cat",
                           f"{rootfs}/.singularity.d/runscript"], capture_output=True,
                          text=True, check=True).stdout
    assert 'echo "runscript: $GREETING"' in seen
    config = json.loads(read_bytes(os.path.join(bundle, "config.json")))
    assert {"type": "user"} in config["linux"]["namespaces"]
    assert config["linux"]["uidMappings"][0]["hostID"] == entry.pw_uid
    res = sif("unbundle", bundle, user=user)
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(bundle)
    if shutil.which("fuse-overlayfs"):
        res = sif("bundle", "--writable-tmpfs", image, bundle, user=user)
        assert res.returncode == 0, res.stderr
        assert _mount_entry(rootfs)[-3] == "fuse.fuse-overlayfs"
        subprocess.run(["runuser", "-u", user, "--", "sh", "-c", f"echo hi > {rootfs}/new"],
                       check=True)
        # The image's root-owned directories are the user's in the writable session
        # (fuse-overlayfs squash_to_uid/gid): the container's root can write them.
        owner = subprocess.run(["runuser", "-u", user, "--", "stat", "-c", "%u",
                                f"{rootfs}/etc"], capture_output=True, text=True, check=True)
        assert owner.stdout.strip() == str(entry.pw_uid)
        assert sif("unbundle", bundle, user=user).returncode == 0
        assert not os.path.exists(bundle)
    overlay = os.path.join(home, "o.sif")
    shutil.copyfile(fixture("b-multi-object-overlay.sif"), overlay)
    os.chown(overlay, entry.pw_uid, entry.pw_gid)
    res = sif("bundle", "--writable", overlay, bundle, user=user)
    assert res.returncode == 1 and "needs root" in res.stderr
    assert not os.path.exists(bundle)
