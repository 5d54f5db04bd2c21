"""What SIF signatures cover, and signing and verifying with the reference's semantics.

A signature is a Signature object in no group, linked to the group it covers. It signs a
JSON document (the "image metadata") holding a digest of the header's integrity bytes
and, per covered object, a digest of its descriptor's integrity bytes (with its ID
relative to the group's smallest ID) and a digest of its data. Verification, as the
reference runs it: every object must be in a group (or be a signature), every group has
at least one signature, every signature linked to a group must verify with the keys
given, the signed object set must equal the group's objects, and each digest must match.
Failures name what broke: the header, descriptor N, object N, or the envelope.

Legacy signatures (Singularity < 3.6: a clear-signed "SIFHASH:" digest of the data
only) are verified only when asked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ocirt import jsonio
from ocirt.sif import format as fmt
from ocirt.sif.format import DataType, Descriptor, HashType
from ocirt.sif.image import Image, ObjectInput, SIFError

METADATA_VERSION = 1
MAX_SIGNATURE_SIZE = 16 << 20  # far above any real signature; bounds what is read
LEGACY_PREFIX = b"SIFHASH:\n"
_DIGEST_NAMES = ("sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256")


class VerifyError(SIFError):
    """The image does not verify; the message says what broke."""


def new_hash(name: str) -> Any:
    if name == "sha512_224":
        return hashlib.new("sha512_224")
    if name == "sha512_256":
        return hashlib.new("sha512_256")
    return hashlib.new(name)


def hash_for_type(hash_type: int) -> Any:
    """A hashlib object for a descriptor hash type (legacy digests use these)."""
    if hash_type == HashType.BLAKE2B:
        return hashlib.blake2b(digest_size=32)
    if hash_type == HashType.BLAKE2S:
        return hashlib.blake2s(digest_size=32)
    name = fmt.HASHLIB_NAMES.get(hash_type)  # type: ignore[call-overload]
    if name is None:
        raise VerifyError(f"hash type {hash_type} unsupported")
    return hashlib.new(name)


def _digest(image: Image, d: Descriptor, name: str = "sha256") -> str:
    h = new_hash(name)
    for chunk in image.chunks(d):
        h.update(chunk)
    return h.hexdigest()


# --- the signed document -------------------------------------------------------------

def image_metadata(image: Image, objects: list[Descriptor], min_id: int) -> bytes:
    """The metadata JSON, byte for byte as Go's json.Marshal writes it."""
    entries = []
    for d in objects:
        entries.append({
            "relativeId": d.id - min_id,
            "descriptorDigest": "sha256:" + hashlib.sha256(
                d.integrity_bytes(image.relative_id(d))).hexdigest(),
            "objectDigest": "sha256:" + _digest(image, d),
        })
    doc = {"version": METADATA_VERSION,
           "header": {"digest": "sha256:" + hashlib.sha256(
               image.header.integrity_bytes()).hexdigest()},
           "objects": entries}
    return jsonio.dumps(doc).encode()


@dataclass
class _Digest:
    algorithm: str
    value: bytes

    @classmethod
    def parse(cls, text: Any) -> _Digest:
        if not isinstance(text, str) or text.count(":") != 1:
            raise ValueError("digest malformed")
        name, hexval = text.split(":")
        if name not in _DIGEST_NAMES:
            raise ValueError("hash algorithm unsupported")
        value = bytes.fromhex(hexval)
        if len(value) != new_hash(name).digest_size:
            raise ValueError("digest malformed")
        return cls(name, value)

    def matches(self, data: Iterable[bytes]) -> bool:
        h = new_hash(self.algorithm)
        for chunk in data:
            h.update(chunk)
        return h.digest() == self.value


@dataclass
class _Metadata:
    header: _Digest
    objects: dict[int, tuple[_Digest, _Digest]]  # relative ID -> (descriptor, data)

    @classmethod
    def parse(cls, text: bytes) -> _Metadata:
        doc = jsonio.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != METADATA_VERSION:
            raise ValueError("unsupported metadata version")
        header = _Digest.parse((doc.get("header") or {}).get("digest"))
        objects: dict[int, tuple[_Digest, _Digest]] = {}
        for entry in doc.get("objects") or []:
            rel = entry.get("relativeId") if isinstance(entry, dict) else None
            if not isinstance(rel, int) or rel < 0:
                raise ValueError("object entry without a valid relativeId")
            objects[rel] = (_Digest.parse(entry.get("descriptorDigest")),
                            _Digest.parse(entry.get("objectDigest")))
        return cls(header, objects)


# --- signing -------------------------------------------------------------------------

class Signer(Protocol):
    """Turns the metadata JSON into a signature object's bytes."""

    def sign(self, message: bytes) -> tuple[bytes, int, bytes | None]:
        """Returns (object data, descriptor hash type, signer fingerprint or None)."""
        ...


class DSSESigner:
    """A DSSE envelope signed by one or more PEM private keys."""

    def __init__(self, private_keys: list[Any], hash_type: int = HashType.SHA256) -> None:
        self.keys = private_keys
        self.hash_type = hash_type

    def sign(self, message: bytes) -> tuple[bytes, int, bytes | None]:
        from ocirt.sif import dsse

        return dsse.seal(message, self.keys, self.hash_type), self.hash_type, None


class PGPSigner:
    """An OpenPGP clear-signed message made by gpg with one secret key."""

    def __init__(self, gpg: Any, key: str) -> None:
        self.gpg = gpg
        self.key = key
        self.fingerprint = bytes.fromhex(gpg.primary_fingerprint(key))

    def sign(self, message: bytes) -> tuple[bytes, int, bytes | None]:
        return self.gpg.clearsign(message, self.key), HashType.SHA256, self.fingerprint


def _signing_tasks(image: Image, groups: list[int], objects: list[int]) -> list[
        tuple[int, list[Descriptor]]]:
    tasks: list[tuple[int, list[Descriptor]]] = []
    for g in groups:
        if g <= 0:
            raise SIFError("invalid group ID 0")
        members = image.group_objects(g)
        if not members:
            raise SIFError(f"{image.path}: group {g} not found")
        tasks.append((g, members))
    if objects:
        by_group: dict[int, list[Descriptor]] = {}
        for oid in sorted(set(objects)):
            d = image.get(oid)
            if not d.group:
                raise SIFError(f"{image.path}: object {oid} is in no group")
            by_group.setdefault(d.group, []).append(d)
        tasks.extend(sorted(by_group.items()))
    if not tasks:
        ids = image.group_ids()
        if not ids:
            raise SIFError(f"{image.path}: no groups found (nothing to sign)")
        tasks = [(g, image.group_objects(g)) for g in ids]
    return tasks


def sign(image: Image, signers: list[Signer], groups: Iterable[int] = (),
         objects: Iterable[int] = (), when: int | None = None) -> list[Descriptor]:
    """Add one signature object per signer for each group (all of its objects) or for
    the chosen objects (one signature per group they are in). Returns the new
    descriptors. Nothing is added unless every signature could be made."""
    tasks = _signing_tasks(image, list(groups), list(objects))
    pending: list[ObjectInput] = []
    for group, members in tasks:
        min_id = image.min_id(members[0].group_raw)
        message = image_metadata(image, sorted(members, key=lambda d: d.id), min_id)
        for signer in signers:
            data, hash_type, fingerprint = signer.sign(message)
            pending.append(ObjectInput(
                DataType.SIGNATURE, data=data, group=0, link_group=group,
                extra=fmt.signature_extra(hash_type, fingerprint)))
    free = sum(1 for d in image.slots if not d.used)
    if len(pending) > free:
        raise SIFError(f"{image.path}: insufficient descriptor capacity for "
                       f"{len(pending)} signature(s)")
    return [image.add(obj, when) for obj in pending]


# --- verification --------------------------------------------------------------------

@dataclass
class KeyMaterial:
    """Public keys to verify with: PEM keys for DSSE and a gpg home with OpenPGP keys."""

    dsse_keys: list[Any] = field(default_factory=list)
    gpg: Any = None


@dataclass
class SignatureResult:
    """One verified signature: which object, its kind, who signed, what it covered."""

    signature_id: int
    kind: str
    signers: list[str]
    objects: list[int]
    group: int = 0


@dataclass
class _Task:
    group: int
    objects: list[Descriptor]
    subset_ok: bool = False
    legacy_object: Descriptor | None = None


def _signature_data(image: Image, sig: Descriptor) -> bytes:
    if sig.size > MAX_SIGNATURE_SIZE:
        raise VerifyError(f"signature object {sig.id} not valid: {sig.size} bytes is too "
                          "large for a signature")
    return image.read(sig)


def _signature_kind(data: bytes) -> str:
    from ocirt.sif import dsse, pgp

    if dsse.parse(data) is not None:
        return "dsse"
    text = pgp.clearsigned_text(data)
    if text is None:
        return "unknown"
    return "legacy" if text.startswith(LEGACY_PREFIX) else "pgp"


def _signatures_for(image: Image, task: _Task, legacy: bool) -> list[Descriptor]:
    found = []
    for d in image.objects():
        if d.data_type != DataType.SIGNATURE:
            continue
        target, is_group = d.link
        if task.legacy_object is not None:
            wanted = not is_group and target == task.legacy_object.id
        else:
            wanted = (is_group and target == task.group
                      and (_signature_kind(_signature_data(image, d)) == "legacy") == legacy)
        if wanted:
            found.append(d)
    if not found:
        if task.legacy_object is not None:
            raise VerifyError(f"signature not found for object {task.legacy_object.id}")
        raise VerifyError(f"signature not found for object group {task.group}")
    return found


def _tasks(image: Image, groups: list[int], objects: list[int], legacy: bool,
           legacy_all: bool) -> list[_Task]:
    if legacy_all:
        objects = sorted(set(objects) | {d.id for d in image.objects()
                                         if d.data_type != DataType.SIGNATURE and d.group})
    if not groups and not objects:
        groups = image.group_ids()
        if not groups:
            raise VerifyError("nothing to verify: the image has no object groups")
    tasks = []
    for g in sorted(set(groups)):
        members = image.group_objects(g)
        if not members:
            raise VerifyError(f"group {g} not found")
        tasks.append(_Task(g, members))
    for oid in sorted(set(objects)):
        d = image.get(oid)
        if legacy:
            tasks.append(_Task(d.group, [d], legacy_object=d))
        else:
            tasks.append(_Task(d.group, [d], subset_ok=True))
    return tasks


def verify(image: Image, keys: KeyMaterial, groups: Iterable[int] = (),
           objects: Iterable[int] = (), legacy: bool = False,
           legacy_all: bool = False) -> list[SignatureResult]:
    """Verify as the reference does; returns one result per signature checked, or raises
    VerifyError naming the first failure."""
    legacy = legacy or legacy_all
    tasks = _tasks(image, list(groups), list(objects), legacy, legacy_all)
    for d in image.objects():
        if not d.group and d.data_type != DataType.SIGNATURE:
            raise VerifyError(f"object {d.id}: non-signature object not associated with "
                              "object group")
    results = []
    for task in tasks:
        for sig in _signatures_for(image, task, legacy):
            if legacy:
                results.append(_verify_legacy(image, task, sig, keys))
            else:
                results.append(_verify_modern(image, task, sig, keys))
    return results


def _open_signature(image: Image, sig: Descriptor, keys: KeyMaterial) -> tuple[
        bytes, str, list[str]]:
    """(signed text, kind, signer names) of a signature object, or VerifyError."""
    from ocirt.sif import dsse

    data = _signature_data(image, sig)
    hash_type, fingerprint = sig.signature()
    kind = _signature_kind(data)
    try:
        if kind == "dsse":
            envelope = dsse.parse(data)
            assert envelope is not None
            payload, signers = dsse.open_envelope(envelope, keys.dsse_keys, hash_type)
            return payload, kind, signers
        if kind in ("pgp", "legacy"):
            if keys.gpg is None:
                raise SIFError("no OpenPGP public key given to verify an OpenPGP signature")
            text, signer = keys.gpg.verify_clearsigned(data)
            if fingerprint is None or signer != fingerprint.hex().upper():
                raise VerifyError(f"signature object {sig.id}: fingerprint in descriptor "
                                  "does not correspond to signing entity")
            return text, kind, [signer]
    except VerifyError:
        raise
    except SIFError as exc:
        raise VerifyError(f"signature object {sig.id} not valid: {exc.message}") from None
    raise VerifyError(f"signature object {sig.id} not valid: signature format not recognized")


def _verify_modern(image: Image, task: _Task, sig: Descriptor,
                   keys: KeyMaterial) -> SignatureResult:
    text, kind, signers = _open_signature(image, sig, keys)
    try:
        meta = _Metadata.parse(text)
    except (ValueError, AttributeError, TypeError) as exc:
        raise VerifyError(f"signature object {sig.id} not valid: metadata: {exc}") from None
    min_id = image.min_id(task.objects[0].group_raw) if task.objects else 0
    signed_ids = {min_id + rel for rel in meta.objects}
    if not task.subset_ok:
        for d in task.objects:
            if d.id not in signed_ids:
                raise VerifyError(f"object {d.id}: object not signed")
        present = {d.id for d in task.objects}
        for oid in sorted(signed_ids - present):
            raise VerifyError(f"object {oid}: signed object not found")
    if not meta.header.matches([image.header.integrity_bytes()]):
        raise VerifyError("header integrity compromised")
    for d in task.objects:
        entry = meta.objects.get(d.id - min_id)
        if entry is None:
            raise VerifyError(f"object {d.id}: object not signed")
        if not entry[0].matches([d.integrity_bytes(image.relative_id(d))]):
            raise VerifyError(f"data object descriptor integrity compromised: {d.id}")
        if not entry[1].matches(image.chunks(d)):
            raise VerifyError(f"data object integrity compromised: {d.id}")
    return SignatureResult(sig.id, kind, signers, [d.id for d in task.objects], task.group)


def _verify_legacy(image: Image, task: _Task, sig: Descriptor,
                   keys: KeyMaterial) -> SignatureResult:
    text, kind, signers = _open_signature(image, sig, keys)
    hash_type, _ = sig.signature()
    body = text[len(LEGACY_PREFIX):] if text.startswith(LEGACY_PREFIX) else text
    try:
        expected = bytes.fromhex(body.rstrip(b"\n").decode("ascii"))
    except ValueError:
        raise VerifyError(f"signature object {sig.id} not valid: legacy digest "
                          "malformed") from None
    h = hash_for_type(hash_type)
    for d in task.objects:
        for chunk in image.chunks(d):
            h.update(chunk)
    if h.digest() != expected:
        if task.legacy_object is not None:
            raise VerifyError(f"data object integrity compromised: {task.legacy_object.id}")
        raise VerifyError("data object integrity compromised")
    return SignatureResult(sig.id, "legacy", signers, [d.id for d in task.objects],
                           task.group)
