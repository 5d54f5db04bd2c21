"""`sif bundle --unpack` of a hostile image: no device node, setuid/setgid bit or file
capability reaches the host, a failure afterwards leaves nothing, and `create` refuses
an unpacked root that holds a device node later (ordinary bundles keep runc's rules)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from conformance.bundle import make_rootfs
from tests.sif.helpers import run_sif

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("mksquashfs") is None
                                 or shutil.which("unsquashfs") is None,
                                 reason="squashfs-tools not installed")]

# VFS_CAP_REVISION_2 granting CAP_NET_RAW, as setcap cap_net_raw+ep writes it
FILE_CAPS = bytes.fromhex("0000000200200000000000000000000000000000")
DEVICES = {"/dev/mem": (stat.S_IFCHR, 1, 1), "/etc/evil-blk": (stat.S_IFBLK, 7, 0),
           "/etc/a\nb": (stat.S_IFCHR, 1, 3), "/etc/[ab]": (stat.S_IFCHR, 1, 5)}


def _hostile_rootfs(path: str) -> str:
    rootfs = make_rootfs(path)
    for name, (kind, major, minor) in DEVICES.items():
        os.mknod(rootfs + name, kind | 0o666, os.makedev(major, minor))
        os.chmod(rootfs + name, 0o666)
    shutil.copy(os.path.join(rootfs, "bin", "busybox"), os.path.join(rootfs, "bin", "suid"))
    os.chmod(os.path.join(rootfs, "bin", "suid"), 0o4755)
    with open(os.path.join(rootfs, "etc", "sgid"), "w") as f:
        f.write("x")
    os.chmod(os.path.join(rootfs, "etc", "sgid"), 0o2755)
    os.mkdir(os.path.join(rootfs, "shared"))
    os.chmod(os.path.join(rootfs, "shared"), 0o2775)  # a setgid directory is harmless
    os.setxattr(os.path.join(rootfs, "bin", "busybox"), "security.capability", FILE_CAPS)
    os.setxattr(os.path.join(rootfs, "bin", "busybox"), "user.kept", b"yes")
    os.mkfifo(os.path.join(rootfs, "etc", "fifo"))
    return rootfs


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("hostile")
    rootfs = _hostile_rootfs(str(base / "rootfs"))
    image = str(base / "hostile.sif")
    try:
        run_sif("create", "--rootfs", rootfs, image, check=True)
    finally:
        shutil.rmtree(rootfs)  # its device nodes must not outlive the image build
    return image


def _listing(image: str) -> str:
    """unsquashfs's own listing of the image's root partition."""
    from ocirt.sif.image import Image

    with Image.open(image) as opened:
        offset = opened.primary_partition().offset
    return subprocess.run(["unsquashfs", "-lln", "-o", str(offset), image],
                          capture_output=True, text=True, check=True).stdout


def _walk(top: str):
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            yield path, os.lstat(path)


def test_unpack_leaves_no_device_setuid_or_capability(hostile_image, tmp_path, sif, ocirt):
    listing = _listing(hostile_image)  # the image really carries what must not come out
    assert "crw-rw-rw- 0/0" in listing and "squashfs-root/dev/mem" in listing
    assert "brw-rw-rw- 0/0" in listing and "-rwsr-xr-x 0/0" in listing
    bundle = str(tmp_path / "b")
    sif("bundle", "--unpack", hostile_image, bundle, check=True)
    rootfs = os.path.join(bundle, "rootfs")
    seen = set()
    for path, st in _walk(bundle):
        seen.add(path[len(rootfs):])
        assert not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)), path
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
        if stat.S_ISREG(st.st_mode):
            assert "security.capability" not in os.listxattr(path), path
    assert {"/bin/suid", "/etc/sgid", "/etc/fifo", "/bin/busybox"} <= seen
    assert not set(DEVICES) & seen
    assert os.stat(os.path.join(rootfs, "shared")).st_mode & stat.S_ISGID
    assert os.getxattr(os.path.join(rootfs, "bin", "busybox"), "user.kept") == b"yes"
    assert not os.path.exists(os.path.join(bundle, ".ocirt-sif-unpack"))
    # what the container sees: the same file, still runnable, without its privileges
    r = ocirt("run", "--bundle", bundle, "u1")
    assert r.rc == 0, r
    sif("unbundle", bundle, check=True)
    assert not os.path.exists(bundle)


def test_failed_unpack_leaves_nothing(hostile_image, tmp_path, sif):
    image = str(tmp_path / "failing.sif")
    shutil.copy(hostile_image, image)
    config = tmp_path / "oci-config.json"
    config.write_text(json.dumps({"config": {"Cmd": ["/bin/true"], "User": "no-such-user"}}))
    run_sif("add", "--datatype", "json", "--name", "oci-config.json", image, str(config),
            check=True)
    bundle = str(tmp_path / "b")
    res = sif("bundle", "--unpack", image, bundle)
    assert res.returncode != 0 and "no-such-user" in res.stderr, res
    assert "Traceback" not in res.stderr
    assert not os.path.exists(bundle), os.listdir(bundle)


def test_create_refuses_a_device_node_written_into_an_unpacked_root(hostile_image,
                                                                    tmp_path, sif, ocirt):
    bundle = str(tmp_path / "b")
    sif("bundle", "--unpack", hostile_image, bundle, check=True)
    rootfs = os.path.join(bundle, "rootfs")
    try:
        hidden = os.path.join(rootfs, "dev", "zero2")  # under the config's /dev tmpfs
        os.mknod(hidden, stat.S_IFCHR | 0o666, os.makedev(1, 5))
        r = ocirt("run", "--bundle", bundle, "u2")
        assert r.rc == 0, r
        planted = os.path.join(rootfs, "etc", "mem")
        os.mknod(planted, stat.S_IFCHR | 0o666, os.makedev(1, 1))
        r = ocirt("create", "--bundle", bundle, "u3")
        assert r.rc == 1, r
        assert "holds device node /etc/mem" in r.err and "Traceback" not in r.err, r
        assert ocirt.ids() == []
        os.unlink(planted)
        os.unlink(hidden)
    finally:
        sif("unbundle", bundle, check=True)


def test_ordinary_bundle_with_device_nodes_is_accepted_like_runc(ocirt, bundle):
    """runc-compatible bundles may carry a static /dev (and nodes elsewhere)."""
    b = bundle(["true"])
    node = os.path.join(b, "rootfs", "etc", "null2")
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    try:
        r = ocirt("run", "--bundle", b, "o1")
        assert r.rc == 0, r
    finally:
        os.unlink(node)
