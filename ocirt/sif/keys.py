"""PEM key pairs for DSSE signatures: generation, loading, and key IDs.

Key IDs are computed as the reference does (sigstore's DSSE signer): "SHA256:" and the
unpadded base64 of the SHA-256 of the public key's SSH wire encoding, i.e. the OpenSSH
fingerprint, so `ocirt sif verify` names the same signer as Singularity would.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from ocirt.sif.image import SIFError

KEY_TYPES = ("ecdsa", "ed25519", "rsa")
CURVES = ("p256", "p384", "p521")


def generate(kind: str, curve: str = "p256", bits: int = 3072) -> Any:
    """A new private key of `kind` (ecdsa with `curve`, ed25519, or rsa with `bits`)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "ecdsa":
        curves = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}
        if curve not in curves:
            raise SIFError(f"unknown curve {curve!r} (one of {', '.join(CURVES)})")
        return ec.generate_private_key(curves[curve]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        if bits < 2048:
            raise SIFError("RSA keys need at least 2048 bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise SIFError(f"unknown key type {kind!r} (one of {', '.join(KEY_TYPES)}, pgp)")


def private_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())


def public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    return key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)


def write_pair(key: Any, prefix: str) -> tuple[str, str]:
    """PREFIX.key (PKCS#8, mode 0600) and PREFIX.pub (PKIX); refuses to overwrite."""
    priv, pub = f"{prefix}.key", f"{prefix}.pub"
    for path in (priv, pub):
        if os.path.lexists(path):
            raise SIFError(f"{path} exists; remove it first")
    _write_new(priv, private_pem(key), 0o600)
    try:
        _write_new(pub, public_pem(key.public_key()), 0o644)
    except BaseException:
        os.unlink(priv)
        raise
    return priv, pub


def _write_new(path: str, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        from ocirt.errors import os_error_text

        raise SIFError(f"create {os_error_text(exc)}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read(path: str) -> bytes:
    from ocirt.linux.files import read_regular

    try:
        return read_regular(path)
    except OSError as exc:
        from ocirt.errors import os_error_text

        raise SIFError(f"read key {os_error_text(exc)}") from None


def load_private(path: str, password: bytes | None = None) -> Any:
    from cryptography.hazmat.primitives import serialization as ser

    data = _read(path)
    try:
        key = ser.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise SIFError(f"{path}: not a usable PEM private key ({exc})") from None
    _check_supported(key.public_key(), path)
    return key


def load_public(path: str) -> Any:
    """A public key from a PEM file holding a public key, a certificate or a private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    data = _read(path)
    key = None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY-----" in data:
            key = ser.load_pem_private_key(data, None).public_key()
        else:
            key = ser.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SIFError(f"{path}: not a usable PEM public key ({exc})") from None
    _check_supported(key, path)
    return key


def _check_supported(key: Any, path: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                      | rsa.RSAPublicKey):
        raise SIFError(f"{path}: unsupported key type (ECDSA, Ed25519 or RSA)")


def key_id(public_key: Any) -> str:
    """The OpenSSH SHA-256 fingerprint of a public key, as DSSE envelopes record it."""
    from cryptography.hazmat.primitives import serialization as ser

    line = public_key.public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    wire = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")


def describe(public_key: Any) -> str:
    """"ECDSA P-256", "Ed25519", "RSA 3072": for listings and messages."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA P-{public_key.curve.key_size}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return "Ed25519"
