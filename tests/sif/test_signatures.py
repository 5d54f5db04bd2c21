"""Signing and verification: the reference files' verdicts, every key type, OpenPGP,
several signatures, and tampering with the header, a descriptor, an object or the
envelope; each failure names what broke."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct

import pytest

from ocirt.sif import dsse, integrity, keys, pgp
from ocirt.sif.format import DataType
from ocirt.sif.image import Image, ObjectInput
from ocirt.sif.integrity import VerifyError
from tests.sif.helpers import (
    DEBIAN_IMAGES,
    DEBIAN_KEY,
    KEYS,
    fixture,
    need_reference_files,
    read_bytes,
)

ECDSA = os.path.join(KEYS, "ecdsa-p256-public.pem")
ED25519 = os.path.join(KEYS, "ed25519-public.pem")
RSA = os.path.join(KEYS, "rsa2048-public.pem")
PGP_PUBLIC = os.path.join(KEYS, "pgp-public.asc")

needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")


def verify(path: str, *key_paths: str, **kw) -> list[integrity.SignatureResult]:
    material = integrity.KeyMaterial([keys.load_public(p) for p in key_paths])
    with Image.open(path) as image:
        return integrity.verify(image, material, **kw)


def verify_error(path: str, *key_paths: str, **kw) -> str:
    with pytest.raises(VerifyError) as info:
        verify(path, *key_paths, **kw)
    return info.value.message


# --- the reference files' verdicts (../shared/fixtures/sif/README.md) ------------------

def test_reference_verdicts() -> None:
    assert "signature not found for object group 1" in verify_error(
        fixture("a-minimal-busybox.sif"), ECDSA)
    result = verify(fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"), ECDSA)
    assert [(r.objects, r.kind) for r in result] == [([1, 2], "dsse")]
    assert result[0].signers == ["SHA256:qp2j/hMTuWUtr54vPdqUyqEM+qbTVJE0OIvit/ACPew"]
    for other in (ED25519, RSA):
        assert "signature object 3 not valid" in verify_error(
            fixture("a-minimal-busybox-signed-dsse-ecdsa-p256.sif"), other)
    assert "signature not found" in verify_error(fixture("b-multi-object.sif"), ECDSA)
    assert "signature not found" in verify_error(fixture("b-multi-object-overlay.sif"), ECDSA)
    result = verify(fixture("c-signed-dsse-ecdsa-p256.sif"), ECDSA)
    assert result[0].objects == [1, 2, 3, 4, 5, 6] and result[0].signature_id == 7
    for other in (ED25519, RSA):
        assert "signature object 7 not valid: envelope" in verify_error(
            fixture("c-signed-dsse-ecdsa-p256.sif"), other)
    assert verify_error(fixture("g-tampered-dsse-ecdsa-partition.sif"), ECDSA) == \
        "data object integrity compromised: 5"
    assert "no object groups" in verify_error(fixture("h-empty.sif"), ECDSA)


def test_key_ids_are_the_openssh_fingerprints() -> None:
    need_reference_files()
    assert keys.key_id(keys.load_public(ECDSA)) == \
        "SHA256:qp2j/hMTuWUtr54vPdqUyqEM+qbTVJE0OIvit/ACPew"
    private = os.path.join(KEYS, "test-only-private")
    pem = [f for f in os.listdir(private) if f.endswith(".pem")][0]
    key = keys.load_private(os.path.join(private, pem))
    assert keys.key_id(key.public_key()) == keys.key_id(keys.load_public(ECDSA))


def test_signing_reproduces_the_reference_metadata(tmp_path, copy_fixture) -> None:
    """Our metadata JSON for b-multi-object equals the payload the reference signed."""
    with Image.open(fixture("c-signed-dsse-ecdsa-p256.sif")) as image:
        envelope = json.loads(image.read(image.get(7)))
    with Image.open(fixture("b-multi-object.sif")) as image:
        ours = integrity.image_metadata(image, image.group_objects(1), 1)
    assert ours == base64.b64decode(envelope["payload"])
    assert envelope["payloadType"] == dsse.PAYLOAD_TYPE


# --- our own signatures, every key type -------------------------------------------------

@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "ed25519", "rsa"])
def test_sign_and_verify_each_key_type(kind, pem_keys, copy_fixture, sif) -> None:
    image = copy_fixture("b-multi-object.sif")
    private, public = pem_keys[kind]
    res = sif("sign", "--key", private, image, check=True)
    assert res.stdout.strip() == "added signature object 7 for group 1"
    res = sif("verify", "--key", public, image)
    assert res.returncode == 0, res.stderr
    assert "objects" not in res.stderr and "1, 2, 3, 4, 5, 6: verified" in res.stdout
    assert keys.key_id(keys.load_public(public)) in res.stdout
    other = pem_keys["ed25519" if kind != "ed25519" else "rsa"][1]
    res = sif("verify", "--key", other, image)
    assert res.returncode == 1 and "signature object 7 not valid: envelope" in res.stderr


def test_deterministic_signatures_match_the_envelope_format(pem_keys, copy_fixture) -> None:
    """Ed25519 and RSA PKCS#1 v1.5 are deterministic: signing twice gives the same
    envelope, and the envelope's keyid and PAE are what a DSSE verifier expects."""
    image = copy_fixture("b-multi-object.sif")
    key = keys.load_private(pem_keys["ed25519"][0])
    with Image.open(image, writable=True) as img:
        first, second = integrity.sign(img, [integrity.DSSESigner([key])] * 2)
        a, b = img.read(first), img.read(second)
    assert a == b
    env = json.loads(a)
    assert list(env) == ["payloadType", "payload", "signatures"]
    payload = base64.b64decode(env["payload"])
    message = dsse.pae(dsse.PAYLOAD_TYPE, payload)
    assert message.startswith(b"DSSEv1 40 application/vnd.sylabs.sif-metadata+json ")
    key.public_key().verify(base64.b64decode(env["signatures"][0]["sig"]), message)


def test_one_envelope_signed_by_several_keys(pem_keys, copy_fixture, sif) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    sif("sign", "--key", pem_keys["p256"][0], "--key", pem_keys["rsa"][0], image, check=True)
    with Image.open(image) as img:
        env = json.loads(img.read(img.get(3)))
    assert len(env["signatures"]) == 2
    for public in (pem_keys["p256"][1], pem_keys["rsa"][1]):
        assert sif("verify", "--key", public, image).returncode == 0
    res = sif("verify", "--key", pem_keys["p256"][1], "--key", pem_keys["rsa"][1], image)
    assert res.returncode == 0
    assert res.stdout.count("SHA256:") == 2, "both signers are named"
    assert sif("verify", "--key", pem_keys["ed25519"][1], image).returncode == 1


def test_every_signature_on_a_group_must_verify(pem_keys, copy_fixture, sif) -> None:
    image = copy_fixture("a-minimal-busybox.sif")
    sif("sign", "--key", pem_keys["p256"][0], image, check=True)
    sif("sign", "--key", pem_keys["ed25519"][0], image, check=True)
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1 and "signature object 4 not valid" in res.stderr
    res = sif("verify", "--key", pem_keys["p256"][1], "--key", pem_keys["ed25519"][1], image)
    assert res.returncode == 0 and res.stdout.count("verified, signed by") == 2


def test_groups_and_chosen_objects(pem_keys, tmp_path) -> None:
    from ocirt.sif.image import create

    path = str(tmp_path / "g.sif")
    create(path, [ObjectInput(DataType.GENERIC, data=b"a"),
                  ObjectInput(DataType.GENERIC, data=b"b", group=2),
                  ObjectInput(DataType.GENERIC, data=b"c", group=2)])
    key = keys.load_private(pem_keys["p256"][0])
    with Image.open(path, writable=True) as image:
        added = integrity.sign(image, [integrity.DSSESigner([key])])
        assert [d.link for d in added] == [(1, True), (2, True)]
    assert [r.objects for r in verify(path, pem_keys["p256"][1])] == [[1], [2, 3]]
    assert [r.objects for r in verify(path, pem_keys["p256"][1], groups=[2])] == [[2, 3]]
    # Sign only object 3 of group 2 in a fresh image: verifying group 2 fails (object 2 is
    # not covered), verifying object 3 alone passes.
    create(path, [ObjectInput(DataType.GENERIC, data=b"b", group=2),
                  ObjectInput(DataType.GENERIC, data=b"c", group=2)])
    with Image.open(path, writable=True) as image:
        integrity.sign(image, [integrity.DSSESigner([key])], objects=[2])
    assert verify_error(path, pem_keys["p256"][1]) == "object 1: object not signed"
    assert verify(path, pem_keys["p256"][1], objects=[2])[0].objects == [2]


# --- tampering: the failure names what broke ------------------------------------------------

def _signed_copy(copy_fixture, sif, pem_keys) -> str:
    image = copy_fixture("b-multi-object.sif")
    sif("sign", "--key", pem_keys["p256"][0], image, check=True)
    return image


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_tampered_header(copy_fixture, sif, pem_keys) -> None:
    image = _signed_copy(copy_fixture, sif, pem_keys)
    _patch(image, 48, b"\x00")  # first byte of the image ID
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1 and "header integrity compromised" in res.stderr
    # The arch and timestamps are not covered: changing them keeps the image valid.
    image = _signed_copy(copy_fixture, sif, pem_keys)
    _patch(image, 64, struct.pack("<q", 1))
    assert sif("verify", "--key", pem_keys["p256"][1], image).returncode == 0


def test_tampered_descriptor(images_like, tmp_path, sif, pem_keys) -> None:
    for n, source in enumerate(images_like("b-multi-object.sif")):
        image = str(tmp_path / f"{n}.sif")
        shutil.copyfile(source, image)
        os.chmod(image, 0o644)
        sif("sign", "--key", pem_keys["p256"][0], image, check=True)
        assert sif("verify", "--key", pem_keys["p256"][1], image).returncode == 0
        _patch(image, 4096 + 585 * 1 + 73, b"x")  # object 2's name
        res = sif("verify", "--key", pem_keys["p256"][1], image)
        assert res.returncode == 1, source
        assert "data object descriptor integrity compromised: 2" in res.stderr, source


def test_tampered_object(copy_fixture, sif, pem_keys) -> None:
    image = _signed_copy(copy_fixture, sif, pem_keys)
    with Image.open(image) as img:
        offset = img.get(3).offset
    _patch(image, offset, b"X")  # the script starts with "#!"
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1 and "data object integrity compromised: 3" in res.stderr


def test_tampered_envelope(copy_fixture, sif, pem_keys) -> None:
    image = _signed_copy(copy_fixture, sif, pem_keys)
    with Image.open(image) as img:
        sig = img.get(7)
        env = json.loads(img.read(sig))
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["objects"] = payload["objects"][:-1]  # claim fewer objects
    forged = dict(env, payload=base64.b64encode(json.dumps(payload).encode()).decode())
    raw = json.dumps(forged).encode().ljust(sig.size)
    _patch(image, sig.offset, raw[: sig.size])
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1
    assert "signature object 7 not valid: envelope: no signature verifies" in res.stderr
    _patch(image, sig.offset, b"garbage!")
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert "signature object 7 not valid: signature format not recognized" in res.stderr


def test_objects_added_after_signing_are_not_signed(copy_fixture, sif, pem_keys,
                                                    tmp_path) -> None:
    image = _signed_copy(copy_fixture, sif, pem_keys)
    extra = tmp_path / "extra"
    extra.write_bytes(b"added later")
    sif("add", image, str(extra), check=True)
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1 and "object 8: object not signed" in res.stderr
    res = sif("verify", "--key", pem_keys["p256"][1], "--object", "5", image)
    assert res.returncode == 0, "a single signed object still verifies"
    sif("del", image, "8", check=True)
    sif("del", image, "6", check=True)
    res = sif("verify", "--key", pem_keys["p256"][1], image)
    assert res.returncode == 1 and "object 6: signed object not found" in res.stderr


def test_objects_outside_groups_are_refused(tmp_path, pem_keys) -> None:
    from ocirt.sif.image import create

    path = str(tmp_path / "n.sif")
    create(path, [ObjectInput(DataType.GENERIC, data=b"a"),
                  ObjectInput(DataType.GENERIC, data=b"b", group=0)])
    with Image.open(path, writable=True) as image:
        integrity.sign(image, [integrity.DSSESigner([keys.load_private(pem_keys["p256"][0])])])
    assert "not associated with object group" in verify_error(path, pem_keys["p256"][1])


# --- OpenPGP -----------------------------------------------------------------------------

@needs_gpg
def test_reference_pgp_signatures_and_legacy(tmp_path) -> None:
    if not os.path.exists(DEBIAN_KEY):
        pytest.skip("Debian's sylabs/sif test images are not installed")
    need_reference_files()
    with pgp.GPG() as g:
        g.import_keys([DEBIAN_KEY])
        material = integrity.KeyMaterial([], g)

        def check(name: str, **kw) -> list:
            with Image.open(os.path.join(DEBIAN_IMAGES, name)) as image:
                return [(r.signature_id, r.kind, r.objects)
                        for r in integrity.verify(image, material, **kw)]

        assert check("one-group-signed.sif") == [(3, "pgp", [1, 2])]
        assert check("two-groups-signed.sif") == [(4, "pgp", [1, 2]), (5, "pgp", [3])]
        assert check("one-group-signed-legacy-group.sif", legacy=True) == \
            [(3, "legacy", [1, 2])]
        assert check("one-group-signed-legacy-all.sif", legacy_all=True) == \
            [(3, "legacy", [1]), (4, "legacy", [2])]
        assert check("one-group-signed-legacy.sif", legacy=True, objects=[2]) == \
            [(3, "legacy", [2])]
        with pytest.raises(VerifyError, match="signature not found for object group 1"):
            check("one-group-signed-legacy.sif")  # legacy signatures only on request
    with pgp.GPG() as g:
        g.import_keys([PGP_PUBLIC])  # some other key
        with Image.open(os.path.join(DEBIAN_IMAGES, "one-group-signed.sif")) as image, \
                pytest.raises(VerifyError, match="signature object 3 not valid.*unknown key"):
            integrity.verify(image, integrity.KeyMaterial([], g))


@needs_gpg
def test_pgp_sign_verify_and_mixed_signatures(copy_fixture, sif, pem_keys, tmp_path) -> None:
    image = copy_fixture("b-multi-object.sif")
    res = sif("sign", "--pgp-key", DEBIAN_KEY, "--key", pem_keys["ed25519"][0], image,
              check=True)
    assert res.stdout.count("added signature object") == 2
    with Image.open(image) as img:
        hash_type, entity = img.get(8).signature()
        assert entity.hex().upper() == "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"
        assert img.read(img.get(8)).startswith(pgp.CLEARSIGN_BEGIN)
    public = tmp_path / "pub.asc"
    with pgp.GPG() as g:
        g.import_keys([DEBIAN_KEY])
        public.write_bytes(g.run("--armor", "--export").stdout)
    res = sif("verify", "--key", pem_keys["ed25519"][1], image)
    assert res.returncode == 1 and "no OpenPGP public key given" in res.stderr
    res = sif("verify", "--pgp-key", str(public), image)
    assert res.returncode == 1 and "no public key given to verify a DSSE" in res.stderr
    res = sif("verify", "--pgp-key", str(public), "--key", pem_keys["ed25519"][1], image)
    assert res.returncode == 0, res.stderr
    assert "(pgp)" in res.stdout and "(dsse)" in res.stdout
    _patch(image, 4096 + 73, b"x")  # object 1's name
    res = sif("verify", "--pgp-key", str(public), "--key", pem_keys["ed25519"][1], image)
    assert "data object descriptor integrity compromised: 1" in res.stderr


@needs_gpg
def test_pgp_keygen_and_wrong_fingerprint(tmp_path, copy_fixture, sif) -> None:
    prefix = str(tmp_path / "mine")
    res = sif("keygen", "--type", "pgp", prefix, check=True)
    assert os.stat(prefix + ".secret.asc").st_mode & 0o777 == 0o600
    image = copy_fixture("a-minimal-busybox.sif")
    sif("sign", "--pgp-key", prefix + ".secret.asc", image, check=True)
    assert sif("verify", "--pgp-key", prefix + ".asc", image).returncode == 0
    fingerprint = res.stdout.split()[-1]
    with Image.open(image) as img:
        assert img.get(3).signature()[1].hex().upper() == fingerprint
        offset = img.get(3).slot * 585 + 4096 + 201 + 4
    _patch(image, offset, b"\x01")
    res = sif("verify", "--pgp-key", prefix + ".asc", image)
    assert res.returncode == 1 and "fingerprint in descriptor" in res.stderr


# --- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,extra", [("ecdsa", ["--curve", "p384"]), ("ed25519", []),
                                        ("rsa", ["--bits", "2048"])])
def test_keygen(tmp_path, sif, kind, extra) -> None:
    prefix = str(tmp_path / kind)
    res = sif("keygen", "--type", kind, *extra, prefix, check=True)
    assert os.stat(prefix + ".key").st_mode & 0o777 == 0o600
    key = keys.load_public(prefix + ".pub")
    assert res.stdout.split()[-1] == keys.key_id(key)
    assert sif("keygen", "--type", kind, prefix).returncode == 1, "never overwrites"
    res = sif("keyid", prefix + ".pub", prefix + ".key", check=True)
    ids = {line.split()[0] for line in res.stdout.splitlines()}
    assert ids == {keys.key_id(key)}
    assert sif("keygen", "--type", "dsa", prefix + "x").returncode == 1


def test_bad_key_files_are_one_line_errors(tmp_path, sif, copy_fixture) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    image = copy_fixture("a-minimal-busybox.sif")
    for args in (["sign", "--key", str(bad), image], ["verify", "--key", str(bad), image],
                 ["verify", "--key", str(tmp_path / "missing.pem"), image]):
        res = sif(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert "bad.pem" in res.stderr or "missing.pem" in res.stderr
    assert read_bytes(image) == read_bytes(fixture("a-minimal-busybox.sif"))
