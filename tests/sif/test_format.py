"""The SIF format library: reading the reference files, writing byte-identical files,
adding/deleting objects, and clear errors (never a traceback) for malformed files."""

from __future__ import annotations

import os
import random
import struct

import pytest

from ocirt.sif import format as fmt
from ocirt.sif.format import DataType, FSType, PartType
from ocirt.sif.image import Image, ObjectInput, SIFError, create, partition_input
from tests.sif.helpers import FIXTURES, fixture, need_reference_files, read_bytes

ALL_FIXTURES = ["a-minimal-busybox.sif", "a-minimal-busybox-signed-dsse-ecdsa-p256.sif",
                "b-multi-object.sif", "b-multi-object-overlay.sif",
                "c-signed-dsse-ecdsa-p256.sif", "g-tampered-dsse-ecdsa-partition.sif",
                "h-empty.sif"]


def test_reads_every_reference_file() -> None:
    for name in ALL_FIXTURES:
        with Image.open(fixture(name)) as image:
            assert image.header.version_text == "01"
            for d in image.objects():
                assert len(image.read(d)) == d.size


def test_multi_object_layout_matches_the_format_notes() -> None:
    with Image.open(fixture("b-multi-object-overlay.sif")) as image:
        h = image.header
        assert h.launch_script_text == fmt.SINGULARITY_LAUNCH_SCRIPT
        assert h.uuid == "0b5e7c9d-2a4f-4c6e-8b1a-3d5f7a9c1e2b"
        assert (h.descriptors_total, h.descriptors_offset, h.data_offset) == (48, 4096, 32176)
        assert h.arch_name == "amd64"
        rows = [(d.id, d.group, d.link, d.type_name, d.name) for d in image.objects()]
        assert rows == [
            (1, 1, (0, False), "Def.FILE", ""), (2, 1, (0, False), "JSON.Labels", "labels.json"),
            (3, 1, (0, False), "Env.Vars", "90-environment.sh"),
            (4, 1, (0, False), "JSON.Generic", "inspect-metadata.json"),
            (5, 1, (0, False), "FS", ""), (6, 1, (0, False), "FS", "data.squashfs"),
            (7, 1, (0, False), "FS", "")]
        primary = image.primary_partition()
        assert primary is not None and primary.id == 5
        assert (primary.offset, primary.size, primary.size_with_padding) == (36864, 4096, 6539)
        assert primary.partition() == (FSType.SQUASHFS, PartType.PRIMSYS, "amd64")
        assert image.get(7).partition() == (FSType.EXT3, PartType.OVERLAY, "amd64")
    with Image.open(fixture("c-signed-dsse-ecdsa-p256.sif")) as image:
        sig = image.get(7)
        assert sig.group == 0 and sig.group_raw == fmt.GROUP_MASK
        assert sig.link == (1, True)
        assert sig.signature() == (fmt.HashType.SHA256, None)


def _copy_objects(image: Image) -> list[ObjectInput]:
    return [ObjectInput(d.data_type, data=image.read(d), name=d.name, extra=d.extra,
                        group=d.group, link=0 if d.link[1] else d.link[0],
                        link_group=d.link[0] if d.link[1] else 0) for d in image.objects()]


@pytest.mark.parametrize("name", ["b-multi-object.sif", "a-minimal-busybox.sif"])
def test_rewriting_a_reference_file_gives_the_same_bytes(tmp_path, name: str) -> None:
    src = fixture(name)
    with Image.open(src) as image:
        h = image.header
        objects = _copy_objects(image)
    out = str(tmp_path / "copy.sif")
    create(out, objects, launch_script=h.launch_script_text, image_id=h.id, when=h.created)
    with open(src, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
    assert os.stat(out).st_mode & 0o111, "SIF files are executable"


def test_adding_to_a_reference_file_matches_the_reference_overlay_file(tmp_path) -> None:
    """b-multi-object-overlay.sif is b-multi-object.sif plus an overlay added later: do
    the same add and get the same bytes (apart from the header's modification time)."""
    target = str(tmp_path / "b.sif")
    with open(fixture("b-multi-object.sif"), "rb") as f, open(target, "wb") as out:
        out.write(f.read())
    with Image.open(fixture("b-multi-object-overlay.sif")) as ref:
        overlay = ref.get(7)
        data, extra, when, modified = ref.read(overlay), overlay.extra, overlay.created, \
            ref.header.modified
    with Image.open(target, writable=True) as image:
        d = image.add(ObjectInput(DataType.PARTITION, data=data, extra=extra), when=when)
        assert d.id == 7
        image.header.modified = modified
        image._write_header()
    with open(fixture("b-multi-object-overlay.sif"), "rb") as a, open(target, "rb") as b:
        assert a.read() == b.read()


def test_create_add_delete_setprim(tmp_path) -> None:
    part = tmp_path / "fs.img"
    part.write_bytes(b"hsqs" + b"\0" * 200)
    out = str(tmp_path / "x.sif")
    create(out, [ObjectInput(DataType.DEFFILE, data=b"Bootstrap: scratch\n"),
                 partition_input(str(part), part=PartType.SYSTEM, arch="arm64")],
           capacity=4, when=1000)
    with Image.open(out, writable=True) as image:
        assert image.primary_partition() is None and image.header.arch_name == "unknown"
        second = image.add(partition_input(str(part), arch="amd64"), when=2000)
        assert second.id == 3 and second.offset % 4096 == 0
        assert image.header.arch_name == "amd64" and image.header.modified == 2000
        with pytest.raises(SIFError, match="already contains a primary partition"):
            image.add(partition_input(str(part), arch="amd64"))
        image.set_primary(2)
        assert image.get(2).partition()[1] == PartType.PRIMSYS
        assert image.get(3).partition()[1] == PartType.SYSTEM
        assert image.header.arch_name == "arm64"
        oci = image.add(ObjectInput(DataType.OCI_BLOB, data=b"{}"))
        assert oci.oci_digest() == ("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8"
                                    "310c060f61caaff8a")
        with pytest.raises(SIFError, match="insufficient descriptor capacity"):
            image.add(ObjectInput(DataType.GENERIC, data=b"x"))
        with pytest.raises(SIFError, match="compact not implemented"):
            image.delete(1, compact=True)
        size = os.path.getsize(out)
        image.delete(oci.id, compact=True)
        assert os.path.getsize(out) == size - oci.size_with_padding
        image.delete(2, zero=True)
        assert image.header.arch_name == "unknown"
        assert image.header.descriptors_free == 2
        reused = image.add(ObjectInput(DataType.GENERIC, data=b"again"))
        assert reused.id == 2, "the first free slot (and its ID) is reused"
    with Image.open(out) as image:
        assert [d.id for d in image.objects()] == [1, 2, 3]
        assert image.read(image.get(2)) == b"again"


def test_setprim_stamps_both_descriptors_as_the_reference_does(tmp_path) -> None:
    """sylabs/sif 2.11+ SetPrimPart: the new and the old primary's ModifiedAt become the
    edit's time, as the header's (2.8.3 only changed the header)."""
    part = tmp_path / "fs.img"
    part.write_bytes(b"hsqs" + b"\0" * 200)
    out = str(tmp_path / "x.sif")
    create(out, [partition_input(str(part), arch="amd64"),
                 partition_input(str(part), part=PartType.SYSTEM, arch="arm64"),
                 ObjectInput(DataType.GENERIC, data=b"x")], when=1000)
    with Image.open(out, writable=True) as image:
        image.set_primary(2, when=5000)
    with Image.open(out) as image:
        assert [(d.id, d.created, d.modified) for d in image.objects()] == [
            (1, 1000, 5000), (2, 1000, 5000), (3, 1000, 1000)]
        assert image.header.modified == 5000 and image.header.arch_name == "arm64"


def test_edits_of_a_deterministic_image_keep_it_deterministic(tmp_path) -> None:
    """As the reference (2.11.1+): an image with the nil UUID and zero times gets the zero
    time for later adds, deletes and setprim, so rebuilding it gives the same bytes."""
    part = tmp_path / "fs.img"
    part.write_bytes(b"hsqs" + b"\0" * 200)
    outs = []
    for name in ("one.sif", "two.sif"):
        out = str(tmp_path / name)
        create(out, [partition_input(str(part), arch="amd64")], deterministic=True)
        with Image.open(out, writable=True) as image:
            assert image.deterministic
            image.add(partition_input(str(part), part=PartType.SYSTEM, arch="arm64"))
            image.add(ObjectInput(DataType.GENERIC, data=b"x"))
            image.set_primary(2)
            image.delete(3)
            assert image.deterministic
            assert {d.modified for d in image.objects()} == {fmt.ZERO_TIME}
        outs.append(read_bytes(out))
    assert outs[0] == outs[1]
    plain = str(tmp_path / "plain.sif")
    create(plain, [partition_input(str(part), arch="amd64")])
    with Image.open(plain, writable=True) as image:
        assert not image.deterministic
        image.add(ObjectInput(DataType.GENERIC, data=b"x"))
        assert image.header.modified > 0


def test_a_failed_add_leaves_the_file_unchanged(tmp_path) -> None:
    out = str(tmp_path / "x.sif")
    create(out, [ObjectInput(DataType.GENERIC, data=b"one")])
    before = read_bytes(out)
    with Image.open(out, writable=True) as image, pytest.raises(SIFError, match="object name"):
        image.add(ObjectInput(DataType.GENERIC, data=b"two" * 1000, name="n" * 200))
    assert read_bytes(out) == before


def test_create_failure_leaves_no_file(tmp_path) -> None:
    out = tmp_path / "x.sif"
    with pytest.raises(SIFError):
        create(str(out), [ObjectInput(DataType.GENERIC, path=str(tmp_path / "missing"))])
    assert os.listdir(tmp_path) == []


# --- malformed files: one clear error, never a traceback or an out-of-bounds read ----

def _expect_clean_error(path: str) -> str:
    try:
        with Image.open(path) as image:
            for d in image.objects():
                image.read(d)
    except SIFError as exc:
        assert "\n" not in exc.message
        return exc.message
    return ""


def test_truncated_files_give_clear_errors(tmp_path) -> None:
    data = read_bytes(fixture("b-multi-object.sif"))
    path = str(tmp_path / "t.sif")
    for cut in (0, 10, 127, 128, 4096, 4096 + 585 * 3, 32176, 36864, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:cut])
        message = _expect_clean_error(path)
        assert message, f"truncation at {cut} went unnoticed"
        assert "SIF" in message or "truncated" in message or "past the end" in message


def test_header_fields_out_of_range_give_clear_errors(tmp_path) -> None:
    data = bytearray(read_bytes(fixture("b-multi-object.sif")))
    path = str(tmp_path / "h.sif")
    cases = {
        32: (b"NOT_MAGIC\0", "not a SIF file"),
        42: (b"02\0", "unsupported SIF version"),
        88: (struct.pack("<q", 1 << 40), "descriptor count"),
        96: (struct.pack("<q", 1 << 40), "extends past the end"),
        104: (struct.pack("<q", 10), "too small"),
        80: (struct.pack("<q", -1), "free descriptor count"),
    }
    for offset, (raw, expected) in cases.items():
        bad = bytearray(data)
        bad[offset:offset + len(raw)] = raw
        with open(path, "wb") as f:
            f.write(bad)
        assert expected in _expect_clean_error(path)


def test_descriptor_pointing_outside_the_file(tmp_path, images_like) -> None:
    for source in images_like("b-multi-object.sif"):
        data = bytearray(read_bytes(source))
        path = str(tmp_path / "d.sif")
        with open(path, "wb") as f:
            f.write(data)
        assert _expect_clean_error(path) == ""  # intact, as made
        slot = 4096 + 585 * 4  # object 5
        data[slot + 17:slot + 25] = struct.pack("<q", len(data) - 10)
        with open(path, "wb") as f:
            f.write(data)
        assert "object 5" in _expect_clean_error(path), source
        data[slot + 5:slot + 9] = struct.pack("<I", 1)  # a duplicate ID
        with open(path, "wb") as f:
            f.write(data)
        assert "duplicate object ID" in _expect_clean_error(path), source


def test_random_corruption_never_raises_anything_but_sif_errors(tmp_path) -> None:
    data = read_bytes(fixture("b-multi-object.sif"))
    rng = random.Random(5)
    path = str(tmp_path / "r.sif")
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.choice([rng.randrange(128), rng.randrange(4096, 4096 + 585 * 7),
                              rng.randrange(len(bad))])
            bad[pos] = rng.randrange(256)
        with open(path, "wb") as f:
            f.write(bad[: rng.choice([len(bad), rng.randrange(len(bad))])])
        _expect_clean_error(path)  # must not raise anything else


def test_not_a_regular_file(tmp_path) -> None:
    with pytest.raises(SIFError, match="not a regular file"):
        Image.open(str(tmp_path))
    with pytest.raises(SIFError, match="no such file"):
        Image.open(str(tmp_path / "missing.sif"))


# --- the CLI ---------------------------------------------------------------------------

def test_cli_list_header_info_dump(sif) -> None:
    path = fixture("b-multi-object-overlay.sif")
    res = sif("list", path, check=True)
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "GROUP", "LINK"]
    assert lines[5].split() == ["5", "1", "NONE", "36864-40960", "4096", "FS",
                                "(Squashfs/*System/amd64)"]
    assert lines[6].split()[-1] == "data.squashfs"
    assert "FS (Ext3/Overlay/amd64)" in lines[7]
    res = sif("header", path, check=True)
    assert "ID:                    0b5e7c9d-2a4f-4c6e-8b1a-3d5f7a9c1e2b" in res.stdout
    assert "Primary Architecture:  amd64" in res.stdout
    assert "Data Offset:           32176" in res.stdout
    res = sif("info", fixture("c-signed-dsse-ecdsa-p256.sif"), "7", check=True)
    assert "Linked ID:    1 (G)" in res.stdout and "Hash Type:    SHA-256" in res.stdout
    res = subprocess_dump(path, "2")
    with Image.open(path) as image:
        assert res == image.read(image.get(2))


def subprocess_dump(path: str, object_id: str) -> bytes:
    import subprocess

    from tests.sif.helpers import PYTHON, REPO

    return subprocess.run([PYTHON, "-m", "ocirt", "sif", "dump", path, object_id],
                          capture_output=True, check=True, cwd=REPO).stdout


def test_cli_new_add_del_setprim(tmp_path, sif) -> None:
    image = str(tmp_path / "n.sif")
    sif("new", "--capacity", "8", "--launch-script", "#!/bin/true", image, check=True)
    part = tmp_path / "p.img"
    part.write_bytes(b"hsqs" + b"\0" * 100)
    res = sif("add", "--datatype", "partition", "--parttype", "1", "--partarch", "arm64",
              image, str(part), check=True)
    assert res.stdout.strip() == "added object 1"
    sif("add", "--datatype", "8", "--name", "key", "--linkid", "1", image, str(part),
        check=True)
    sif("setprim", image, "1", check=True)
    res = sif("list", image, check=True)
    assert "FS (Squashfs/*System/arm64)" in res.stdout
    assert "Cryptographic Message" in res.stdout
    sif("del", image, "2", "--compact", check=True)
    assert "Cryptographic" not in sif("list", image, check=True).stdout
    res = sif("header", image, check=True)
    assert "Launch Script:         #!/bin/true" in res.stdout
    assert "Descriptors Total:     8" in res.stdout


@pytest.mark.parametrize("command", ["info", "dump", "del", "setprim"])
def test_cli_takes_siftool_s_argument_order_too(tmp_path, sif, command) -> None:
    """siftool writes `info <id> <sif_path>`; ocirt's own order is IMAGE ID. Both work,
    and give the same result."""
    part = tmp_path / "p.img"
    part.write_bytes(b"hsqs" + b"\0" * 100)
    images = []
    for order in ("ocirt", "siftool"):
        image = str(tmp_path / f"{order}.sif")
        create(image, [partition_input(str(part), arch="amd64"),
                       partition_input(str(part), part=PartType.SYSTEM, arch="arm64")],
               image_id=b"\1" * 16, when=1000)
        args = (image, "2") if order == "ocirt" else ("2", image)
        images.append((image, sif(command, *args, check=True).stdout))
    (ours, out_ours), (theirs, out_theirs) = images
    assert out_ours.replace("ocirt.sif", "X") == out_theirs.replace("siftool.sif", "X")
    with Image.open(ours) as a, Image.open(theirs) as b:
        assert [(d.id, d.extra) for d in a.objects()] == [(d.id, d.extra) for d in b.objects()]
        if command in ("del", "setprim"):
            assert a.header.modified > 1000 and b.header.modified > 1000  # edited, both


def test_cli_argument_order_errors(tmp_path, sif) -> None:
    image = str(tmp_path / "x.sif")
    create(image, [ObjectInput(DataType.GENERIC, data=b"one")])
    res = sif("info", "7", str(tmp_path / "missing.sif"))
    assert res.returncode == 1 and "missing.sif: no such file or directory" in res.stderr
    res = sif("info", str(tmp_path / "missing.sif"), "7")
    assert res.returncode == 1 and "missing.sif: no such file or directory" in res.stderr
    res = sif("info", image, "one")
    assert res.returncode == 1 and "object ID: not a number: 'one'" in res.stderr
    # Two numbers that both name files: which is the image cannot be told.
    for name in ("1", "2"):
        (tmp_path / name).write_bytes(read_bytes(image))
    res = sif("info", "1", "2", cwd=str(tmp_path))
    assert res.returncode == 1 and "'1' and '2' are both numbers and files" in res.stderr
    res = sif("info", "./1", "1", cwd=str(tmp_path))
    assert res.returncode == 0 and "Generic/Raw" in res.stdout


def test_cli_add_sets_the_reference_metadata(tmp_path, sif) -> None:
    """siftool's --signhash/--signentity/--sbomformat/--link/--filename, and --cmformat/
    --cmtype for a cryptographic message, as the descriptors record them."""
    image = str(tmp_path / "m.sif")
    sif("new", image, check=True)
    data = tmp_path / "d.bin"
    data.write_bytes(b"{}")
    fpr = "433FE984155206BD962725E20E8713472A879943"
    sif("add", "--datatype", "sbom", "--sbomformat", "cyclonedx-xml", image, str(data),
        check=True)
    sif("add", "--datatype", "cryptomessage", "--cmformat", "openpgp", "--cmtype",
        "clear-signature", image, str(data), check=True)
    sif("add", "--datatype", "5", "--signhash", "3", "--signentity", fpr, "--link", "1",
        "--filename", "sig", image, str(data), check=True)
    sif("add", "--datatype", "partition", "--partfs", "4", "--parttype", "3", "--partarch",
        "12", image, str(data), check=True)
    with Image.open(image) as opened:
        sbom, cm, sig, part = opened.objects()
        assert sbom.sbom_format() == fmt.SBOMFormat.CYCLONEDX_XML
        assert cm.crypto_message() == (fmt.FormatType.OPENPGP, fmt.MessageType.CLEAR_SIGNATURE)
        assert sig.signature() == (fmt.HashType.SHA512, bytes.fromhex(fpr))
        assert (sig.link, sig.name) == ((1, False), "sig")
        assert part.partition() == (FSType.RAW, PartType.DATA, "riscv64")
    info = sif("info", "2", image, check=True).stdout
    assert "Format Type:   OpenPGP" in info and "Message Type:  Clear Signature" in info


@pytest.mark.parametrize("flags, message", [
    (["--datatype", "sbom"], "with --datatype sbom, --sbomformat must be given"),
    (["--datatype", "sbom", "--sbomformat", "spdx-xml"], "--sbomformat: unknown value"),
    (["--datatype", "json", "--sbomformat", "spdx-json"],
     "--sbomformat goes with --datatype sbom"),
    (["--datatype", "generic", "--signhash", "1"], "--signhash goes with --datatype signature"),
    (["--datatype", "signature", "--signentity", "ABCD"], "a fingerprint has 20 bytes"),
    (["--datatype", "signature", "--signentity", "xyz"], "is not hexadecimal"),
    (["--datatype", "signature", "--signhash", "9"], "--signhash: unknown value '9'"),
    (["--datatype", "cryptomessage", "--cmformat", "pem"], "--cmformat and --cmtype go"),
    (["--datatype", "cryptomessage", "--cmformat", "x509", "--cmtype", "rsa-oaep"],
     "--cmformat: unknown value 'x509'"),
])
def test_cli_add_metadata_errors_name_the_flag(tmp_path, sif, flags, message) -> None:
    image = str(tmp_path / "m.sif")
    sif("new", image, check=True)
    before = read_bytes(image)
    res = sif("add", *flags, image, image)
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert read_bytes(image) == before


def test_cli_errors_are_one_line(sif, tmp_path) -> None:
    res = sif("list", str(tmp_path / "nope.sif"))
    assert res.returncode == 1 and "no such file or directory" in res.stderr
    assert "Traceback" not in res.stderr
    bad = tmp_path / "bad.sif"
    bad.write_bytes(b"x" * 200)
    res = sif("list", str(bad))
    assert res.returncode == 1 and "not a SIF file" in res.stderr
    res = sif("info", fixture("b-multi-object.sif"), "99")
    assert res.returncode == 1 and "object 99 not found" in res.stderr
    res = sif("frobnicate")
    assert res.returncode == 3
    res = sif("list")
    assert res.returncode == 1 and "requires exactly 1 argument" in res.stderr
    assert sif("--help").returncode == 0 and "bundle" in sif("help").stdout
    assert "--writable-tmpfs" in sif("bundle", "--help").stdout


def test_fixture_checksums_are_intact() -> None:
    """Guard against a modified reference file making every other test meaningless."""
    import hashlib

    need_reference_files()

    sums = read_bytes(os.path.join(FIXTURES, "SHA256SUMS")).decode().split("\n")
    for line in filter(None, sums):
        digest, name = line.split()
        with open(os.path.join(FIXTURES, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
