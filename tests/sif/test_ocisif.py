"""OCI-SIF images (SingularityCE 4's format: an OCI image stored as SIF objects) run as
bundles: squashfs layers mounted in place and stacked, the OCI config as the process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from ocirt.sif import ocisif
from ocirt.sif.format import DataType
from ocirt.sif.image import Image, ObjectInput, SIFError, create
from tests.sif.helpers import read_bytes


def _squash(src: str, out: str) -> str:
    subprocess.run(["mksquashfs", src, out, "-noappend", "-no-progress", "-quiet",
                    "-no-recovery"], check=True, capture_output=True)
    return out


def _desc(data: bytes, media_type: str) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


def make_oci_sif(path: str, layer_files: list[str], config: dict) -> None:
    """An OCI-SIF laid out as the reference writer does: layers, config, manifest, then
    the root index; deterministic, no spare descriptors."""
    layers = [read_bytes(f) for f in layer_files]
    cfg = json.dumps(config).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _desc(cfg, "application/vnd.oci.image.config.v1+json"),
        "layers": [_desc(b, ocisif.SQUASHFS_LAYER) for b in layers]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        _desc(manifest, "application/vnd.oci.image.manifest.v1+json")]}).encode()
    objects = [ObjectInput(DataType.OCI_BLOB, data=b) for b in [*layers, cfg, manifest]]
    objects.append(ObjectInput(DataType.OCI_ROOT_INDEX, data=index))
    create(path, objects, deterministic=True, capacity=len(objects))


@pytest.fixture
def oci_sif(tmp_path, rootfs_template) -> str:
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "motd").write_text("from the top layer\n")
    layers = [_squash(rootfs_template, str(tmp_path / "l0.sqfs")),
              _squash(str(top), str(tmp_path / "l1.sqfs"))]
    path = str(tmp_path / "oci.sif")
    make_oci_sif(path, layers, {"architecture": "amd64", "os": "linux", "config": {
        "Cmd": ["/bin/sh", "-c", "cat /etc/motd; echo $X; ls /bin/busybox"],
        "Env": ["X=oci-sif env"]}})
    return path


def test_reading_an_oci_sif(oci_sif) -> None:
    with Image.open(oci_sif) as image:
        assert ocisif.is_oci_sif(image)
        doc = ocisif.manifest(image)
        assert ocisif.config(image, doc)["config"]["Env"] == ["X=oci-sif env"]
        layers = ocisif.squashfs_layers(image, doc)
        assert [d.id for d in layers] == [1, 2]
        assert image.header.id == b"\0" * 16 and image.header.descriptors_free == 0


def test_tampered_oci_blob_is_refused(oci_sif, sif, tmp_path) -> None:
    with Image.open(oci_sif) as image:
        cfg = image.get(3)
    with open(oci_sif, "r+b") as f:
        f.seek(cfg.offset + 2)
        f.write(b"Z")
    with Image.open(oci_sif) as image, pytest.raises(SIFError, match="does not match"):
        ocisif.config(image, ocisif.manifest(image))
    res = sif("bundle", oci_sif, str(tmp_path / "b"))
    assert res.returncode == 1 and "does not match" in res.stderr
    assert not os.path.exists(tmp_path / "b")


@pytest.mark.root
def test_oci_sif_layers_are_stacked_and_run(oci_sif, sif, ocirt, tmp_path) -> None:
    bundle = str(tmp_path / "b")
    sif("bundle", oci_sif, bundle, check=True)
    with open("/proc/self/mountinfo") as f:
        kinds = {line.split()[4]: line.split(" - ")[1].split()[0] for line in f}
    assert kinds[os.path.join(bundle, "rootfs")] == "overlay"
    assert sum(1 for p, k in kinds.items() if p.startswith(bundle) and k == "squashfs") == 2
    res = ocirt("run", "--bundle", bundle, "t1")
    assert res.rc == 0, res
    assert res.out.splitlines() == ["from the top layer", "oci-sif env", "/bin/busybox"]
    sif("unbundle", bundle, check=True)
