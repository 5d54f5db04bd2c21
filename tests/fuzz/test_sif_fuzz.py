"""Fuzzing the SIF parser: the global header, the descriptor table, the objects and the
JSON inside them (labels, oci-config.json, OCI-SIF indexes, manifests and configs, DSSE
signature envelopes). Every image is either read or refused with the project's one-line
user error (OcirtError), never another exception or a hang, by every reader: the
listings of `ocirt sif`, the bundle adapter's metadata and config, the root layers and
signature verification. Runs without root (nothing is mounted)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocirt import jsonio
from ocirt.errors import OcirtError
from ocirt.sif import format as fmt
from ocirt.sif import image as sifimage
from ocirt.sif import integrity, keys
from ocirt.sif.format import DataType, FSType, PartType
from tests.fuzz.strategies import json_values, mutated, no_hang

SQUASHFS = b"hsqs" + bytes(124)
LABELS = {"org.label-schema.name": "fuzz", "maintainer": "x"}
OCI_CONFIG = {"config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
                         "Env": ["PATH=/bin", "A=b"], "WorkingDir": "/", "User": "0:0",
                         "Labels": {"a": "b"}}}
_KEY = keys.generate("ecdsa", "p256", 0)


def _partition() -> sifimage.ObjectInput:
    return sifimage.ObjectInput(DataType.PARTITION, data=SQUASHFS, name="rootfs",
                                extra=fmt.partition_extra(FSType.SQUASHFS, PartType.PRIMSYS,
                                                          fmt.host_arch()))


def native_image(path: str, labels=LABELS, oci_config=OCI_CONFIG, sign: bool = True) -> str:
    objects = [
        sifimage.ObjectInput(DataType.DEFFILE, data=b"bootstrap: scratch\n"),
        sifimage.ObjectInput(DataType.LABELS, data=json.dumps(labels).encode()),
        sifimage.ObjectInput(DataType.GENERIC_JSON, name="oci-config.json",
                             data=jsonio.dumps(oci_config).encode("utf-8", "surrogatepass")),
        _partition(),
    ]
    sifimage.create(path, objects, capacity=8, deterministic=True)
    if sign:
        with sifimage.Image.open(path, writable=True) as image:
            integrity.sign(image, [integrity.DSSESigner([_KEY])])
    return path


def _blob(doc) -> tuple[sifimage.ObjectInput, str]:
    data = jsonio.dumps(doc).encode("utf-8", "surrogatepass")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return sifimage.ObjectInput(DataType.OCI_BLOB, data=data,
                                extra=fmt.digest_extra(digest)), digest


def oci_image(path: str, config=OCI_CONFIG, manifest_edit=None, index_edit=None) -> str:
    layer_digest = "sha256:" + hashlib.sha256(SQUASHFS).hexdigest()
    layer = sifimage.ObjectInput(DataType.OCI_BLOB, data=SQUASHFS,
                                 extra=fmt.digest_extra(layer_digest))
    config_obj, config_digest = _blob(config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": len(config_obj.data)},
                "layers": [{"mediaType": "application/vnd.sylabs.image.layer.v1.squashfs",
                            "digest": layer_digest, "size": len(SQUASHFS)}]}
    manifest = manifest_edit(manifest) if manifest_edit else manifest
    manifest_obj, manifest_digest = _blob(manifest)
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": manifest_digest, "size": len(manifest_obj.data)}]}
    index = index_edit(index) if index_edit else index
    root = sifimage.ObjectInput(DataType.OCI_ROOT_INDEX,
                                data=jsonio.dumps(index).encode("utf-8", "surrogatepass"))
    sifimage.create(path, [root, manifest_obj, config_obj, layer], capacity=8,
                    deterministic=True)
    return path


def _one_line(exc: OcirtError) -> None:
    text = str(exc)
    assert text and "\n" not in text, repr(text)


def read_everything(path: str, rootfs: str) -> None:
    """Every reader of an image; each either works or raises a one-line OcirtError."""
    from ocirt.cli import sif as cli

    for args in (["list", path], ["header", path], ["info", path, "1"],
                 ["info", path, "4"], ["dump", path, "2"]):
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        with contextlib.redirect_stdout(out), _refusal_ok():
            cli.main(None, None, args)
    with _refusal_ok():
        _adapter(path, rootfs)
    with _refusal_ok(), sifimage.Image.open(path) as image:
        integrity.verify(image, integrity.KeyMaterial(dsse_keys=[_KEY.public_key()]))


def _adapter(path: str, rootfs: str) -> None:
    """What `sif bundle` and `run --image` read before anything is mounted, and the
    planner's verdict on the config.json they would write."""
    from ocirt.sif import bundle
    from ocirt.sif.runconfig import RunOptions, build_config
    from ocirt.spec.plan import build_plan

    with sifimage.Image.open(path) as image:
        for d in image.objects():
            d.describe_type()
            image.relative_id(d)
        meta, _layers = bundle._image_metadata(image)
    config = build_config(rootfs, meta, RunOptions(args=[], rootless=False))
    build_plan(json.loads(jsonio.dumps(config)), os.path.dirname(rootfs))


@contextlib.contextmanager
def _refusal_ok():
    try:
        yield
    except OcirtError as exc:
        _one_line(exc)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("sif-fuzz")
    os.mkdir(base / "rootfs")
    for sub in ("etc", "bin"):
        os.mkdir(base / "rootfs" / sub)
    (base / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    return str(base)


@pytest.fixture(scope="module")
def bases(workdir) -> dict[str, bytes]:
    out = {}
    for name, make in (("native", native_image), ("oci", oci_image)):
        path = os.path.join(workdir, f"base-{name}.sif")
        make(path)
        with open(path, "rb") as f:
            out[name] = f.read()
    return out


def _write(workdir: str, data: bytes) -> str:
    path = os.path.join(workdir, "fuzzed.sif")
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_base_images_are_read_and_verify(bases, workdir):
    """The properties start from images every reader accepts (or they test nothing)."""
    for name, data in bases.items():
        path = _write(workdir, data)
        read_everything(path, os.path.join(workdir, "rootfs"))
        with sifimage.Image.open(path) as image:
            assert image.objects()
            if name == "native":
                assert integrity.verify(image, integrity.KeyMaterial(
                    dsse_keys=[_KEY.public_key()]))
        _adapter(path, os.path.join(workdir, "rootfs"))


_HEADER_FIELDS = struct.Struct("<qqqqqqqq")  # created .. data_size, at offset 64
_DESCRIPTOR_INTS = struct.Struct("<iBIIIqqqqqqq")


@st.composite
def patches(draw, size: int):
    """Byte patches that aim at the header's and descriptors' fields as often as at the
    data: (offset, bytes) pairs."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, 3))
        if where == 0:  # a header number
            field = draw(st.integers(0, 7))
            value = draw(st.integers(-(1 << 63), (1 << 63) - 1)
                         | st.sampled_from([0, 1, -1, 8, 4096, 1 << 32, size, size + 1]))
            out.append((64 + 8 * field, struct.pack("<q", value)))
        elif where == 1:  # a descriptor number
            slot = draw(st.integers(0, 7))
            offset = draw(st.sampled_from([0, 1, 5, 9, 13, 17, 25, 33, 41, 49, 57, 65]))
            value = draw(st.integers(-(1 << 31), (1 << 32) - 1)
                         | st.sampled_from([0, 1, 0x4001, 0x4004, 0x4005, 0x4006,
                                            0xF0000001, 0xF0000002]))
            width = 1 if offset == 4 else 4 if offset < 17 else 8
            raw = (value % (1 << (8 * width))).to_bytes(width, "little")
            out.append((fmt.DEFAULT_DESCRIPTORS_OFFSET + slot * fmt.DESCRIPTOR_SIZE + offset,
                        raw))
        else:
            out.append((draw(st.integers(0, size + 16)), draw(st.binary(min_size=1,
                                                                        max_size=16))))
    if draw(st.booleans()):
        out.append(("truncate", draw(st.integers(0, size))))
    return out


def _apply(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for offset, raw in edits:
        if offset == "truncate":
            del buf[raw:]
            continue
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(raw)] = raw
    return bytes(buf)


@given(kind=st.sampled_from(["native", "oci"]), data=st.data())
def test_byte_level_damage_is_read_or_refused(bases, workdir, kind, data):
    edits = data.draw(patches(len(bases[kind])))
    path = _write(workdir, _apply(bases[kind], edits))
    with no_hang():
        read_everything(path, os.path.join(workdir, "rootfs"))


@given(labels=json_values, oci_config=mutated(OCI_CONFIG))
def test_hostile_json_in_a_native_image(workdir, labels, oci_config):
    path = native_image(os.path.join(workdir, "json.sif"), labels=labels,
                        oci_config=oci_config, sign=False)
    with no_hang():
        read_everything(path, os.path.join(workdir, "rootfs"))


@given(config=mutated(OCI_CONFIG), manifest=st.data())
def test_hostile_json_in_an_oci_sif(workdir, config, manifest):
    def edit_manifest(doc):
        return manifest.draw(mutated(doc, max_mutations=2)) \
            if manifest.draw(st.booleans()) else doc

    def edit_index(doc):
        return manifest.draw(mutated(doc, max_mutations=2)) \
            if manifest.draw(st.booleans()) else doc

    path = oci_image(os.path.join(workdir, "oci.sif"), config=config,
                     manifest_edit=edit_manifest, index_edit=edit_index)
    with no_hang():
        read_everything(path, os.path.join(workdir, "rootfs"))


@given(envelope=st.data())
def test_hostile_signature_envelopes(bases, workdir, envelope):
    """The DSSE envelope (and the metadata inside it) of a signed image, mutated."""
    path = _write(workdir, bases["native"])
    with sifimage.Image.open(path) as image:
        (sig,) = image.find(DataType.SIGNATURE)
        doc = json.loads(image.read(sig))
    new = envelope.draw(mutated(doc, max_mutations=3))
    if envelope.draw(st.booleans()) and isinstance(new, dict):
        inner = envelope.draw(mutated(_payload(doc), max_mutations=3))
        import base64

        new["payload"] = base64.b64encode(
            jsonio.dumps(inner).encode("utf-8", "surrogatepass")).decode()
    data = jsonio.dumps(new).encode("utf-8", "surrogatepass")
    with sifimage.Image.open(path, writable=True) as image:
        image.delete(sig.id)
        image.add(sifimage.ObjectInput(DataType.SIGNATURE, data=data, group=0,
                                       link_group=1, extra=sig.extra))
    with no_hang():
        read_everything(path, os.path.join(workdir, "rootfs"))


def _payload(envelope: dict):
    import base64

    return json.loads(base64.b64decode(envelope["payload"]))
