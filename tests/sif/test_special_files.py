"""A FIFO, socket or device where an image (or a key, a definition file, an input file)
should be: every `ocirt sif` command and `run --image` refuses it with one line, before
any open that could block (a FIFO without a writer used to hang every command)."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from tests.sif.helpers import run_sif

KINDS = ("fifo", "socket", "chardev", "blockdev")


@pytest.fixture
def special(tmp_path):
    """kind -> path of such a file; the socket is bound (and listening) while the test
    runs, so that a blocking open would have something to wait on."""
    paths = {}
    fifo = str(tmp_path / "image.fifo")
    os.mkfifo(fifo)
    paths["fifo"] = fifo
    sock_path = str(tmp_path / "image.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    sock.listen(1)
    paths["socket"] = sock_path
    paths["chardev"] = "/dev/zero"  # reads forever: must not be read at all
    if os.geteuid() == 0:
        blk = str(tmp_path / "image.blk")
        os.mknod(blk, stat.S_IFBLK | 0o600, os.makedev(7, 250))
        paths["blockdev"] = blk
    yield paths
    sock.close()


def _refused(res, what: str) -> None:
    err = res.stderr.strip()
    assert res.returncode != 0, res
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "internal error" not in err, err
    assert "not a regular file" in err and what in err, err


def _commands(path: str, pem: tuple[str, str], tmp_path) -> dict[str, list[str]]:
    priv, pub = pem
    return {
        "list": ["list", path],
        "header": ["header", path],
        "info": ["info", path, "1"],
        "dump": ["dump", path, "1"],
        "add-to": ["add", path, priv],
        "del": ["del", path, "1"],
        "setprim": ["setprim", path, "1"],
        "sign": ["sign", "--key", priv, path],
        "verify": ["verify", "--key", pub, path],
        "bundle": ["bundle", path, str(tmp_path / "b")],
        "bundle-unpack": ["bundle", "--unpack", path, str(tmp_path / "b")],
        "keyid": ["keyid", path],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_sif_command_refuses_special_files(special, pem_keys, tmp_path, kind):
    if kind not in special:
        pytest.skip("mknod of a block device needs root")
    path = special[kind]
    what = {"fifo": "FIFO", "socket": "socket", "chardev": "character device",
            "blockdev": "block device"}[kind]
    for name, args in _commands(path, pem_keys["p256"], tmp_path).items():
        res = run_sif(*args, timeout=30)
        _refused(res, what)
        assert not os.path.exists(tmp_path / "b"), f"{name} left a bundle"


def test_special_input_files_are_refused(special, tmp_path, copy_fixture):
    image = copy_fixture("a-minimal-busybox.sif")
    before = os.stat(image).st_size
    _refused(run_sif("add", image, special["fifo"], timeout=30), "FIFO")
    assert os.stat(image).st_size == before
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    out = str(tmp_path / "out.sif")
    _refused(run_sif("create", "--rootfs", str(rootfs), "--deffile", special["fifo"], out,
                     timeout=30), "FIFO")
    assert not os.path.exists(out)


@pytest.mark.root
def test_run_image_and_root_path_refuse_a_fifo(special, ocirt, bundle):
    r = ocirt("run", "--image", special["fifo"], "c1", timeout=30)
    assert r.rc == 1 and "not a regular file (a FIFO)" in r.err, r
    assert r.err.strip().count("\n") == 0 and "Traceback" not in r.err
    b = bundle(["true"], edit=lambda c: c["root"].update(path=special["fifo"]))
    r = ocirt("create", "--bundle", b, "c2", timeout=30)
    assert r.rc == 1 and "not a regular file (a FIFO)" in r.err, r
    assert ocirt.ids() == []
