"""A checkpoint carried inside a SIF image (`checkpoint --sif`, `restore --sif`).

The storage half (the objects, the group, signing, verification, a tampered object
refused before CRIU runs) needs no working CRIU and runs everywhere; the round trip of a
real container (checkpointed into a SIF, the file copied, restored under another state
root, counting on) runs where `criu check` passes (the test-host guest).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conformance.runner import Runtime, wait_for
from ocirt.sif import checkpoint as sifcp
from ocirt.sif.image import Image
from tests.checkpoint.helpers import needs_criu
from tests.checkpoint.helpers import numbers as _numbers
from tests.checkpoint.helpers import run_detached as _run_detached
from tests.checkpoint.helpers import tamper as _tamper

pytestmark = pytest.mark.root

FILES = {"core-1.img": b"\x01core" * 100, "pages-1.img": os.urandom(5000),
         "descriptors.json": b'["/dev/null","/dev/null","/dev/null"]'}


def _sif(ocirt_bin: str, path: str, capacity: int = 48) -> str:
    subprocess.run([ocirt_bin, "sif", "new", "--capacity", str(capacity), path], check=True)
    return path


def _keys(ocirt_bin: str, prefix: str) -> tuple[str, str]:
    subprocess.run([ocirt_bin, "sif", "keygen", "-t", "ed25519", prefix], check=True,
                   capture_output=True)
    return prefix + ".key", prefix + ".pub"


def _images(tmp_path) -> str:
    d = tmp_path / "images"
    d.mkdir()
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    (d / "dump.log").write_text("criu's log is not carried\n")
    return str(d)


def _signed(ocirt_bin: str, tmp_path) -> tuple[str, str]:
    from ocirt.sif import integrity, keys

    private, public = _keys(ocirt_bin, str(tmp_path / "k"))
    sif = _sif(ocirt_bin, str(tmp_path / "img.sif"))
    signer = integrity.DSSESigner([keys.load_private(private)])
    sifcp.store(sif, _images(tmp_path), b'{"ociVersion":"1.0.2"}', "c1", "now", [signer])
    return sif, public



def test_checkpoint_objects_are_listed_and_verified(ocirt_bin, tmp_path):
    sif, public = _signed(ocirt_bin, tmp_path)
    listing = subprocess.run([ocirt_bin, "sif", "list", sif], capture_output=True, text=True,
                             check=True).stdout
    for name in FILES:
        assert sifcp.PREFIX + name in listing
    assert sifcp.MANIFEST in listing and sifcp.CONFIG in listing
    assert "dump.log" not in listing
    assert "Signature" in listing
    done = subprocess.run([ocirt_bin, "sif", "verify", "--key", public, sif],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Image.open(sif) as image:
        (group, manifest), = sifcp.checkpoints(image)
        assert manifest["container"] == "c1" and manifest["files"] == sorted(FILES)
        # every object in the checkpoint's group, each its own
        assert len(image.group_objects(group)) == len(FILES) + 2
    from ocirt.sif.policy import Policy

    dest = tmp_path / "out"
    dest.mkdir()
    config, _ = sifcp.extract(sif, str(dest), Policy(keys=[public]))
    assert config == b'{"ociVersion":"1.0.2"}'
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data


def test_tampered_checkpoint_object_is_refused(ocirt_bin, tmp_path, bundle):
    sif, public = _signed(ocirt_bin, tmp_path)
    _tamper(sif, "pages-1.img")
    done = subprocess.run([ocirt_bin, "sif", "verify", "--key", public, sif],
                          capture_output=True, text=True)
    assert done.returncode != 0
    root = str(tmp_path / "state")
    rt = Runtime(ocirt_bin, root)
    r = rt("restore", "--sif", sif, "--key", public, "--bundle", bundle(), "cs1")
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1 and "verification failed" in r.err, r.err
    assert rt.status("cs1") is None
    assert os.listdir(os.path.join(root, "@restore")) == []  # the scratch copy is gone


def test_full_descriptor_table_is_one_line(ocirt_bin, tmp_path):
    sif = _sif(ocirt_bin, str(tmp_path / "small.sif"), capacity=3)
    with pytest.raises(Exception, match="3 free descriptor slots, the checkpoint needs 5"):
        sifcp.store(sif, _images(tmp_path), b"{}", "c1", "now")
    with Image.open(sif) as image:
        assert image.objects() == []


@needs_criu
def test_counter_continues_from_a_copied_sif(ocirt, ocirt_bin, counter, tmp_path):
    """Checkpointed into a signed SIF, the file copied, restored from the copy under a
    new state root: it counts on from where it stopped; a tampered copy is refused."""
    b, count = counter
    private, public = _keys(ocirt_bin, str(tmp_path / "k"))
    sif = _sif(ocirt_bin, str(tmp_path / "app.sif"), capacity=200)
    _run_detached(ocirt, "cs2", b)
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=20)
    r = ocirt("checkpoint", "--sif", sif, "--sign-key", private, "cs2")
    assert r.ok, r
    assert ocirt.status("cs2") is None
    assert os.listdir(os.path.join(ocirt.root, "@checkpoint")) == []  # no images left
    stopped_at = _numbers(count)
    listing = subprocess.run([ocirt_bin, "sif", "list", sif], capture_output=True, text=True,
                             check=True).stdout
    assert "criu/pstree.img" in listing and "criu/config.json" in listing
    copy = str(tmp_path / "elsewhere" / "app.sif")
    os.makedirs(os.path.dirname(copy))
    shutil.copy(sif, copy)
    tampered = str(tmp_path / "tampered.sif")
    shutil.copy(sif, tampered)
    _tamper(tampered, "pstree.img")
    other = Runtime(ocirt_bin, str(tmp_path / "other-root"))
    try:
        with open(os.devnull, "wb") as null:
            r = other("restore", "-d", "--sif", tampered, "--key", public, "--bundle", b,
                      "cs2", stdout=null)
            assert r.rc == 1 and "verification failed" in r.err, r
            assert other.status("cs2") is None
            r = other("restore", "-d", "--sif", copy, "--key", public, "--bundle", b, "cs2",
                      stdout=null)
        assert r.ok, r
        assert other.status("cs2") == "running"
        assert wait_for(lambda: len([n for n in _numbers(count) if n > stopped_at[-1]]) >= 3,
                        timeout=20)
        after = _numbers(count)[len(stopped_at):]
        assert after[0] == stopped_at[-1] + 1, (stopped_at[-3:], after[:3])
    finally:
        other.cleanup()
    assert other.ids() == []
