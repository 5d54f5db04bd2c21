"""Building images: from a root file system directory, and from an OCI image layout
(layers with whiteouts, the image config driving the container), including layers that
try to write outside the tree."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from ocirt.sif.format import DataType
from ocirt.sif.image import Image
from ocirt.sif.ocilayout import LayoutError, apply_tar
from tests.ocilayout import GZ, TAR, Layout, rootfs_tar
from tests.sif.helpers import read_bytes

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def _squashfs_listing(image: str) -> str:
    with Image.open(image) as img:
        offset = img.primary_partition().offset  # type: ignore[union-attr]
    return subprocess.run(["unsquashfs", "-lls", "-o", str(offset), image],
                          capture_output=True, text=True, check=True).stdout


def test_create_from_rootfs(tmp_path, rootfs_template, sif) -> None:
    image = str(tmp_path / "r.sif")
    res = sif("create", "--rootfs", rootfs_template, "--runscript", 'echo "rs $A $*"',
              "--env", "A=from env", "--label", "Owner=me", "--arch", "arm64", image)
    assert res.returncode == 0, res.stderr
    with Image.open(image) as img:
        kinds = [(d.type_name, d.name) for d in img.objects()]
        assert kinds == [("JSON.Labels", "labels.json"), ("Env.Vars", "90-environment.sh"),
                         ("FS", "")]
        assert img.header.arch_name == "arm64"
        assert img.header.launch_script_text == "#!/usr/bin/env run-singularity\n"
        assert json.loads(img.read(img.get(1))) == {"Owner": "me"}
    listing = _squashfs_listing(image)
    for entry in ("/.singularity.d/actions/run", "/.singularity.d/env/90-environment.sh",
                  "/.singularity.d/runscript", "/.singularity.d/labels.json",
                  "/singularity -> .singularity.d/runscript", "/bin/busybox"):
        assert entry in listing, entry
    assert not os.path.exists(os.path.join(rootfs_template, ".singularity.d")), \
        "the source directory is left as it was"
    res = sif("create", "--rootfs", rootfs_template, image)
    assert res.returncode == 0, "an existing output is replaced"
    assert [n for n in os.listdir(tmp_path) if n != "r.sif"] == [], "no scratch left"


@root_only
def test_rootfs_image_runs(tmp_path, rootfs_template, sif, ocirt) -> None:
    image, bundle = str(tmp_path / "r.sif"), str(tmp_path / "b")
    sif("create", "--rootfs", rootfs_template, "--runscript", 'echo "rs $A $*"', "--env",
        "A=from env", image, check=True)
    sif("bundle", image, bundle, "--", "x", check=True)
    res = ocirt("run", "--bundle", bundle, "t1")
    assert res.rc == 0 and res.out == "rs from env x\n", res
    sif("unbundle", bundle, check=True)


def test_existing_singularity_tree_is_kept(tmp_path, rootfs_template, sif) -> None:
    src = tmp_path / "src"
    shutil.copytree(rootfs_template, src, symlinks=True)
    (src / ".singularity.d").mkdir()
    res = sif("create", "--rootfs", str(src), "--runscript", "true", str(tmp_path / "x.sif"))
    assert res.returncode == 1 and "has its own /.singularity.d" in res.stderr
    assert not os.path.exists(tmp_path / "x.sif")
    res = sif("create", "--rootfs", str(tmp_path / "missing"), str(tmp_path / "x.sif"))
    assert res.returncode == 1 and "not a directory" in res.stderr
    res = sif("create", str(tmp_path / "x.sif"))
    assert res.returncode == 1 and "--rootfs" in res.stderr


# --- OCI image layouts -------------------------------------------------------------------

def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _entry(name: str, kind: bytes, target: str = "", mode: int = 0o755) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info, None


@pytest.fixture
def layout(tmp_path, rootfs_template) -> str:
    """Two layers: busybox plus data, then whiteouts, an opaque directory and a link."""
    lay = Layout(str(tmp_path / "layout"))
    base = rootfs_tar(rootfs_template, [
        _entry("data", tarfile.DIRTYPE), _file("data/a", b"a\n"), _file("data/b", b"b\n"),
        _entry("opq", tarfile.DIRTYPE), _file("opq/old", b"old\n")])
    first = lay.blob(gzip.compress(base), GZ)
    second = lay.blob(_tar([
        _file("data/.wh.a", b""), _file("opq/.wh..wh..opq", b""), _file("opq/new", b"new\n"),
        _entry("data/link", tarfile.LNKTYPE, "data/b")]), TAR)
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": ["/bin/sh", "-c"],
                         "Cmd": ['echo "$GREETING"; ls /data /opq; id -u; pwd; '
                                 "cat /data/link"],
                         "Env": ["PATH=/bin", "GREETING=hello from OCI"],
                         "WorkingDir": "/data", "User": "user",
                         "Labels": {"org.example.team": "sif"}}}
    lay.image([first, second], config)
    return lay.path


def test_oci_layout_build(tmp_path, layout, sif) -> None:
    image = str(tmp_path / "o.sif")
    res = sif("create", "--oci", layout, image)
    assert res.returncode == 0, res.stderr
    with Image.open(image) as img:
        (cfg,) = img.find(DataType.GENERIC_JSON, "oci-config.json")
        assert json.loads(img.read(cfg))["config"]["WorkingDir"] == "/data"
        (labels,) = img.find(DataType.LABELS)
        assert json.loads(img.read(labels)) == {"org.example.team": "sif"}
    listing = _squashfs_listing(image)
    assert "/data/b" in listing and "/opq/new" in listing
    assert "/data/a" not in listing and "/opq/old" not in listing and ".wh." not in listing
    assert "/.singularity.d/env/10-docker2singularity.sh" in listing
    assert sif("create", "--oci", layout + ":nope", image).returncode == 1


@root_only
def test_oci_image_runs_with_its_config(tmp_path, layout, sif, ocirt) -> None:
    image, bundle = str(tmp_path / "o.sif"), str(tmp_path / "b")
    sif("create", "--oci", layout + ":latest", image, check=True)
    sif("bundle", image, bundle, check=True)
    config = json.loads(read_bytes(os.path.join(bundle, "config.json")))
    assert config["process"]["user"] == {"uid": 1000, "gid": 1000}
    assert config["annotations"]["org.example.team"] == "sif"
    res = ocirt("run", "--bundle", bundle, "t1")
    assert res.rc == 0, res
    assert res.out.splitlines() == ["hello from OCI", "/data:", "b", "link", "", "/opq:",
                                    "new", "1000", "/data", "b"]
    sif("unbundle", bundle, check=True)
    sif("bundle", image, bundle, "--", "echo replaced cmd", check=True)
    res = ocirt("run", "--bundle", bundle, "t2")
    assert res.out == "replaced cmd\n", res
    sif("unbundle", bundle, check=True)


def test_layers_cannot_write_outside_the_tree(tmp_path) -> None:
    dest = tmp_path / "root"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = _tar([_entry("escape", tarfile.SYMTYPE, str(outside)),
                  _file("escape/pwned", b"x"),
                  _entry("up", tarfile.SYMTYPE, "../../.."),
                  _file("up/also", b"x")])
    apply_tar(io.BytesIO(layer), str(dest))
    assert os.listdir(outside) == []
    # A symlink whose target is not in the tree is replaced by a directory: what the
    # layer writes through it stays in the tree.
    assert (dest / "escape" / "pwned").exists()
    assert (dest / "also").exists(), "../../.. resolves to the root of the tree"
    with pytest.raises(LayoutError, match="leaves the root"):
        apply_tar(io.BytesIO(_tar([_file("../evil", b"x")])), str(dest))
    with pytest.raises(LayoutError, match="leaves the root"):
        apply_tar(io.BytesIO(_tar([_entry("h", tarfile.LNKTYPE, "../../etc/passwd")])),
                  str(dest))
    assert not (tmp_path / "evil").exists()


def test_corrupt_blobs_are_refused(tmp_path, layout, sif) -> None:
    blobs = os.path.join(layout, "blobs", "sha256")
    victim = max((os.path.join(blobs, b) for b in os.listdir(blobs)), key=os.path.getsize)
    data = bytearray(read_bytes(victim))
    data[-100] ^= 0xFF
    with open(victim, "wb") as f:
        f.write(data)
    res = sif("create", "--oci", layout, str(tmp_path / "o.sif"))
    assert res.returncode == 1
    assert "does not match its digest" in res.stderr or "layer" in res.stderr
    assert not os.path.exists(tmp_path / "o.sif")
    assert sorted(os.listdir(tmp_path)) == ["layout"], "no scratch left"


@root_only
@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_layouts_written_by_umoci_and_skopeo(tmp_path, sif, ocirt) -> None:
    """umoci writes an OCI layout; skopeo turns it into a docker-archive (what `docker
    save` writes) and back into a layout: both build images that run."""
    from conformance.bundle import busybox

    lay = str(tmp_path / "umoci")
    for argv in (["umoci", "init", "--layout", lay],
                 ["umoci", "new", "--image", f"{lay}:t"],
                 ["umoci", "insert", "--image", f"{lay}:t", busybox(), "/bin/busybox"],
                 ["umoci", "config", "--image", f"{lay}:t", "--config.entrypoint",
                  "/bin/busybox", "--config.cmd", "echo", "--config.cmd", "made by umoci"]):
        subprocess.run(argv, check=True, capture_output=True)
    sources = [f"{lay}:t"]
    if shutil.which("skopeo"):
        archive, again = str(tmp_path / "docker.tar"), str(tmp_path / "skopeo")
        for src, dst in ((f"oci:{lay}:t", f"docker-archive:{archive}:img:latest"),
                         (f"docker-archive:{archive}", f"oci:{again}:img")):
            subprocess.run(["skopeo", "copy", "--insecure-policy", "-q", src, dst],
                           check=True, capture_output=True)
        sources.append(f"{again}:img")
    for i, source in enumerate(sources):
        image, bundle = str(tmp_path / f"u{i}.sif"), str(tmp_path / f"b{i}")
        sif("create", "--oci", source, image, check=True)
        sif("bundle", image, bundle, check=True)
        res = ocirt("run", "--bundle", bundle, f"t{i}")
        assert res.rc == 0 and res.out == "made by umoci\n", (source, res)
        sif("unbundle", bundle, check=True)
