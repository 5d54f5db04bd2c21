"""DSSE envelopes (Dead Simple Signing Envelope), the signature format of
`singularity sign --key` and sylabs/sif >= 2.9.

The envelope is JSON {"payloadType", "payload" (base64), "signatures": [{"keyid",
"sig"}]}; what is signed is the PAE encoding of the payload type and the raw payload.
Algorithms follow sigstore's signers, as the reference uses them: ECDSA (any of P-256,
P-384, P-521) signs the hash of the PAE as ASN.1 DER, Ed25519 signs the PAE itself, RSA
uses PKCS#1 v1.5. One envelope may carry signatures by several keys; it verifies when at
least one of them checks out with one of the keys given.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ocirt import jsonio
from ocirt.sif.format import HashType
from ocirt.sif.image import SIFError
from ocirt.sif.keys import key_id

PAYLOAD_TYPE = "application/vnd.sylabs.sif-metadata+json"


class EnvelopeError(SIFError):
    """The envelope is malformed or no signature in it verifies."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1 <len> <type> <len> <payload>"."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _hash(hash_type: int) -> Any:
    from cryptography.hazmat.primitives import hashes

    choices = {HashType.SHA256: hashes.SHA256, HashType.SHA384: hashes.SHA384,
               HashType.SHA512: hashes.SHA512}
    if hash_type not in choices:
        raise EnvelopeError(f"hash type {hash_type} not usable for DSSE signatures")
    return choices[hash_type]()


def sign_bytes(private_key: Any, message: bytes, hash_type: int) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(message, ec.ECDSA(_hash(hash_type)))
    return private_key.sign(message, padding.PKCS1v15(), _hash(hash_type))


def verify_bytes(public_key: Any, signature: bytes, message: bytes, hash_type: int) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(_hash(hash_type)))
        else:
            public_key.verify(signature, message, padding.PKCS1v15(), _hash(hash_type))
    except (InvalidSignature, ValueError):
        return False
    return True


def seal(payload: bytes, private_keys: list[Any], hash_type: int = HashType.SHA256) -> bytes:
    """An envelope over `payload` signed by every key in `private_keys`."""
    message = pae(PAYLOAD_TYPE, payload)
    signatures = []
    for key in private_keys:
        sig = sign_bytes(key, message, hash_type)
        signatures.append({"keyid": key_id(key.public_key()),
                           "sig": base64.b64encode(sig).decode()})
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                "signatures": signatures}
    return jsonio.dumps(envelope).encode()


def parse(data: bytes) -> dict[str, Any] | None:
    """The envelope as a dict when `data` is a SIF metadata envelope, else None."""
    try:
        obj = jsonio.loads(data)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("payloadType") == PAYLOAD_TYPE:
        return obj
    return None


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"envelope: {what} is not a string")
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
    raise EnvelopeError(f"envelope: {what} is not valid base64")


def open_envelope(envelope: dict[str, Any], public_keys: list[Any],
                  hash_type: int) -> tuple[bytes, list[str]]:
    """Check the envelope's signatures; returns (payload, IDs of the keys that verified).

    Raises EnvelopeError naming what failed when no signature verifies.
    """
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("envelope: no signatures")
    if not public_keys:
        raise EnvelopeError("envelope: no public key given to verify a DSSE signature")
    message = pae(str(envelope.get("payloadType")), payload)
    verified: list[str] = []
    known = [(key_id(k), k) for k in public_keys]
    for entry in signatures:
        if not isinstance(entry, dict):
            raise EnvelopeError("envelope: malformed signature entry")
        sig = _b64(entry.get("sig"), "signature")
        wanted = entry.get("keyid") or ""
        for kid, key in known:
            if wanted and kid != wanted:
                continue
            if kid not in verified and verify_bytes(key, sig, message, hash_type):
                verified.append(kid)
    if not verified:
        ids = ", ".join(repr(e.get("keyid"))[:80] if e.get("keyid") else "?"
                        for e in signatures if isinstance(e, dict))
        raise EnvelopeError(f"envelope: no signature verifies with the given keys "
                            f"(signed by {ids})")
    return payload, verified
