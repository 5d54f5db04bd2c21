"""Verification policy: which keys are trusted, and refusing images that do not verify.

This is the library side of "trusted containers": `verify_image(path, policy)` raises an
OcirtError naming the reason (unsigned, tampered header/descriptor/object, unknown
signer) unless every signature of the image verifies with the policy's keys. The runtime
calls it before it mounts an image; `ocirt sif verify` and `ocirt sif bundle --verify`
use the same code.

A policy file is JSON:

    {
      "keys":    ["/etc/ocirt/keys/site.pub"],       PEM public keys (DSSE signatures)
      "pgpKeys": ["/etc/ocirt/keys/site.asc"],       OpenPGP public keys
      "legacy":  false,                              accept only legacy signatures
      "require": true                                false: the policy allows anything
    }

Relative key paths are taken relative to the policy file's directory.
"""

from __future__ import annotations

import os

from ocirt.errors import SIFError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

DEFAULT_POLICY_PATH = "/etc/ocirt/sif-policy.json"


class PolicyError(SIFError):
    """The policy file is unreadable or invalid."""


class Policy:
    """Trusted keys and how to verify. `require` False means images are not checked.

    A plain class, not a dataclass: every `run --image` and SIF `root.path` loads the
    policy, and importing dataclasses (with inspect, re, ...) costs ~15 ms a container."""

    __slots__ = ("keys", "pgp_keys", "legacy", "require", "source")

    def __init__(self, keys: list[str] | None = None, pgp_keys: list[str] | None = None,
                 legacy: bool = False, require: bool = True, source: str = "") -> None:
        self.keys = list(keys or [])
        self.pgp_keys = list(pgp_keys or [])
        self.legacy = legacy
        self.require = require
        self.source = source

    def _fields(self) -> tuple[Any, ...]:
        return (self.keys, self.pgp_keys, self.legacy, self.require, self.source)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return (f"Policy(keys={self.keys!r}, pgp_keys={self.pgp_keys!r}, "
                f"legacy={self.legacy!r}, require={self.require!r}, source={self.source!r})")

    def with_keys(self, keys: list[str], pgp_keys: list[str]) -> Policy:
        """This policy plus keys given on the command line."""
        return Policy([*self.keys, *keys], [*self.pgp_keys, *pgp_keys], self.legacy,
                      self.require, self.source)

    @property
    def has_keys(self) -> bool:
        return bool(self.keys or self.pgp_keys)


def load_policy(path: str | None = None) -> Policy | None:
    """The policy at `path`; with no path, the system policy (None when it does not
    exist). Raises PolicyError naming the file and field for an invalid policy."""
    from ocirt import jsonio

    explicit = path is not None
    path = path or DEFAULT_POLICY_PATH
    from ocirt.linux.files import read_regular

    try:
        doc = jsonio.loads(read_regular(path))
    except FileNotFoundError:
        if explicit:
            raise PolicyError(f"policy {path}: no such file or directory") from None
        return None
    except OSError as exc:
        from ocirt.errors import os_error_text

        raise PolicyError(f"policy {os_error_text(exc)}") from None
    except ValueError as exc:
        raise PolicyError(f"policy {path}: {exc}") from None
    return _parse(doc, path)


def _parse(doc: Any, path: str) -> Policy:
    if not isinstance(doc, dict):
        raise PolicyError(f"policy {path}: not a JSON object")
    unknown = set(doc) - {"keys", "pgpKeys", "legacy", "require"}
    if unknown:
        raise PolicyError(f"policy {path}: unknown field {sorted(unknown)[0]!r}")
    base = os.path.dirname(os.path.abspath(path))

    def paths(name: str) -> list[str]:
        value = doc.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"policy {path}: {name} must be a list of file names")
        return [os.path.join(base, v) for v in value]

    flags = {}
    for name in ("legacy", "require"):
        value = doc.get(name, name == "require")
        if not isinstance(value, bool):
            raise PolicyError(f"policy {path}: {name} must be true or false")
        flags[name] = value
    return Policy(paths("keys"), paths("pgpKeys"), flags["legacy"], flags["require"], path)


def verify_image(image: str | Any, policy: Policy, groups: list[int] | None = None,
                 objects: list[int] | None = None, legacy_all: bool = False) -> list[Any]:
    """Verify an image (a path, or an open ocirt.sif.image.Image) against `policy`;
    returns the per-signature results (ocirt.sif.integrity.SignatureResult) or raises an
    OcirtError whose one line starts with the image path and says what broke.

    To mount exactly what was verified, pass the open Image and mount from it
    (`mount_image(..., image=it)`): a path could be swapped between the two steps. An
    image file that someone other than the caller (or root) can write is refused, since
    it could change after verification.
    """
    from ocirt.sif.image import Image

    if not policy.require:
        return []
    if isinstance(image, Image):
        return _verify_open(image, policy, groups, objects, legacy_all)
    with Image.open(image) as opened:
        return _verify_open(opened, policy, groups, objects, legacy_all)


def _verify_open(image: Any, policy: Policy, groups: list[int] | None,
                 objects: list[int] | None, legacy_all: bool) -> list[Any]:
    from ocirt.sif import integrity, keys

    check_ownership(image.fd, image.path)
    material = integrity.KeyMaterial([keys.load_public(k) for k in policy.keys])
    gpg = None
    try:
        if policy.pgp_keys:
            from ocirt.sif import pgp

            gpg = pgp.GPG()
            gpg.import_keys(policy.pgp_keys)
            material.gpg = gpg
        return integrity.verify(image, material, groups or (), objects or (),
                                legacy=policy.legacy, legacy_all=legacy_all)
    except integrity.VerifyError as exc:
        raise integrity.VerifyError(f"{image.path}: verification failed: {exc.message}") \
            from None
    finally:
        if gpg is not None:
            gpg.close()


def check_ownership(fd: int, path: str) -> None:
    """Refuse an image that a user other than the caller or root could rewrite after it
    was verified (group- or world-writable, or owned by someone else)."""
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise PolicyError(f"{path}: writable by others (owner {st.st_uid}, mode "
                          f"{st.st_mode & 0o7777:04o}): it could change after verification")
