"""The on-disk records of a SIF file: the 128-byte global header and the 585-byte data
object descriptors, with the enumerations stored in them.

Everything is little-endian and packed, as the reference (Go `encoding/binary` on
structs) writes it. Field meanings and offsets are in the format notes; the names here
follow the reference so that error messages and listings read the same.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER_SIZE = 128
DESCRIPTOR_SIZE = 585
MAGIC = b"SIF_MAGIC\0"
VERSION = b"01\0"
LAUNCH_SCRIPT_SIZE = 32
NAME_SIZE = 128
EXTRA_SIZE = 384
GROUP_MASK = 0xF0000000
DEFAULT_GROUP = 1
DEFAULT_DESCRIPTORS_OFFSET = 4096
DEFAULT_CAPACITY = 48
PARTITION_ALIGNMENT = 4096
# Go's zero time.Time as Unix seconds: what the reference stores for "no time".
ZERO_TIME = -62135596800
SINGULARITY_LAUNCH_SCRIPT = "#!/usr/bin/env run-singularity\n"

_HEADER = struct.Struct("<32s10s3s3s16sqqqqqqqq")
_DESCRIPTOR = struct.Struct("<iBIIIqqqqqqq128s384s")
_INTEGRITY_FIELDS = struct.Struct("<iBIIqqqq")
assert _HEADER.size == HEADER_SIZE and _DESCRIPTOR.size == DESCRIPTOR_SIZE


class DataType(IntEnum):
    DEFFILE = 0x4001
    ENVVAR = 0x4002
    LABELS = 0x4003
    PARTITION = 0x4004
    SIGNATURE = 0x4005
    GENERIC_JSON = 0x4006
    GENERIC = 0x4007
    CRYPTO_MESSAGE = 0x4008
    SBOM = 0x4009
    OCI_ROOT_INDEX = 0x400A
    OCI_BLOB = 0x400B


# siftool's names, so listings match the reference tool's.
DATA_TYPE_NAMES = {
    DataType.DEFFILE: "Def.FILE", DataType.ENVVAR: "Env.Vars", DataType.LABELS: "JSON.Labels",
    DataType.PARTITION: "FS", DataType.SIGNATURE: "Signature",
    DataType.GENERIC_JSON: "JSON.Generic", DataType.GENERIC: "Generic/Raw",
    DataType.CRYPTO_MESSAGE: "Cryptographic Message", DataType.SBOM: "SBOM",
    DataType.OCI_ROOT_INDEX: "OCI.RootIndex", DataType.OCI_BLOB: "OCI.Blob",
}


class FSType(IntEnum):
    SQUASHFS = 1
    EXT3 = 2
    ARCHIVE = 3
    RAW = 4
    ENCRYPTED_SQUASHFS = 5


FS_TYPE_NAMES = {FSType.SQUASHFS: "Squashfs", FSType.EXT3: "Ext3", FSType.ARCHIVE: "Archive",
                 FSType.RAW: "Raw", FSType.ENCRYPTED_SQUASHFS: "Encrypted squashfs"}


class PartType(IntEnum):
    SYSTEM = 1
    PRIMSYS = 2
    DATA = 3
    OVERLAY = 4


PART_TYPE_NAMES = {PartType.SYSTEM: "System", PartType.PRIMSYS: "*System",
                   PartType.DATA: "Data", PartType.OVERLAY: "Overlay"}


class HashType(IntEnum):
    SHA256 = 1
    SHA384 = 2
    SHA512 = 3
    BLAKE2S = 4
    BLAKE2B = 5


# The names Go's crypto.Hash prints (siftool shows these for signatures).
HASH_TYPE_NAMES = {HashType.SHA256: "SHA-256", HashType.SHA384: "SHA-384",
                   HashType.SHA512: "SHA-512", HashType.BLAKE2S: "BLAKE2s-256",
                   HashType.BLAKE2B: "BLAKE2b-256"}
# hashlib names of the same.
HASHLIB_NAMES = {HashType.SHA256: "sha256", HashType.SHA384: "sha384",
                 HashType.SHA512: "sha512", HashType.BLAKE2S: "blake2s",
                 HashType.BLAKE2B: "blake2b256"}


class FormatType(IntEnum):
    OPENPGP = 1
    PEM = 2


class MessageType(IntEnum):
    CLEAR_SIGNATURE = 0x100
    RSA_OAEP = 0x200


FORMAT_TYPE_NAMES = {FormatType.OPENPGP: "OpenPGP", FormatType.PEM: "PEM"}
MESSAGE_TYPE_NAMES = {MessageType.CLEAR_SIGNATURE: "Clear Signature",
                      MessageType.RSA_OAEP: "RSA-OAEP"}


class SBOMFormat(IntEnum):
    CYCLONEDX_JSON = 1
    CYCLONEDX_XML = 2
    GITHUB_JSON = 3
    SPDX_JSON = 4
    SPDX_RDF = 5
    SPDX_TAG_VALUE = 6
    SPDX_YAML = 7
    SYFT_JSON = 8


SBOM_FORMAT_NAMES = {
    SBOMFormat.CYCLONEDX_JSON: "cyclonedx-json", SBOMFormat.CYCLONEDX_XML: "cyclonedx-xml",
    SBOMFormat.GITHUB_JSON: "github-json", SBOMFormat.SPDX_JSON: "spdx-json",
    SBOMFormat.SPDX_RDF: "spdx-rdf", SBOMFormat.SPDX_TAG_VALUE: "spdx-tag-value",
    SBOMFormat.SPDX_YAML: "spdx-yaml", SBOMFormat.SYFT_JSON: "syft-json",
}

# Go architecture names and their two-digit SIF codes (loong64 is newer upstream only).
ARCH_CODES = {
    "386": "01", "amd64": "02", "arm": "03", "arm64": "04", "ppc64": "05", "ppc64le": "06",
    "mips": "07", "mipsle": "08", "mips64": "09", "mips64le": "10", "s390x": "11",
    "riscv64": "12", "loong64": "13",
}
_ARCH_NAMES = {code: name for name, code in ARCH_CODES.items()}
ARCH_UNKNOWN = b"00\0"

# uname -m -> Go architecture name.
_MACHINE_ARCH = {"x86_64": "amd64", "i686": "386", "i386": "386", "aarch64": "arm64",
                 "armv7l": "arm", "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x",
                 "riscv64": "riscv64", "mips64": "mips64", "loongarch64": "loong64"}


def arch_code(name: str) -> bytes:
    """The 3-byte field for a Go architecture name; ValueError for an unknown one."""
    code = ARCH_CODES.get(name)
    if code is None:
        raise ValueError(f"unknown architecture {name!r}")
    return code.encode() + b"\0"


def arch_name(field: bytes) -> str:
    """Go architecture name for a stored 3-byte field, "unknown" when not recognised."""
    return _ARCH_NAMES.get(field[:2].decode("ascii", "replace"), "unknown")


def host_arch() -> str:
    import os

    machine = os.uname().machine
    return _MACHINE_ARCH.get(machine, machine)


def type_name(value: int, names: dict) -> str:
    try:
        return names[value]
    except KeyError:
        return "Unknown"


def cstring(raw: bytes) -> str:
    """A NUL-padded fixed-size field as text (trailing NULs stripped, as the reader does)."""
    return raw.rstrip(b"\0").decode("utf-8", "replace")


@dataclass
class Header:
    """The global header (offset 0, 128 bytes)."""

    launch_script: bytes = b"\0" * LAUNCH_SCRIPT_SIZE
    magic: bytes = MAGIC
    version: bytes = VERSION
    arch: bytes = ARCH_UNKNOWN
    id: bytes = b"\0" * 16
    created: int = 0
    modified: int = 0
    descriptors_free: int = 0
    descriptors_total: int = 0
    descriptors_offset: int = DEFAULT_DESCRIPTORS_OFFSET
    descriptors_size: int = 0
    data_offset: int = 0
    data_size: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        return cls(*_HEADER.unpack(raw))

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.launch_script, self.magic, self.version, self.arch, self.id, self.created,
            self.modified, self.descriptors_free, self.descriptors_total,
            self.descriptors_offset, self.descriptors_size, self.data_offset, self.data_size)

    def integrity_bytes(self) -> bytes:
        """The 61 bytes signatures cover: launch script, magic, version and ID (not arch)."""
        return self.launch_script + self.magic + self.version + self.id

    @property
    def launch_script_text(self) -> str:
        return cstring(self.launch_script)

    @property
    def version_text(self) -> str:
        return cstring(self.version)

    @property
    def arch_name(self) -> str:
        return arch_name(self.arch)

    @property
    def uuid(self) -> str:
        h = self.id.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Descriptor:
    """One slot of the descriptor table. `group_raw` and `link_raw` are stored values
    (with the group mask); `slot` is the index in the table."""

    data_type: int = 0
    used: int = 0
    id: int = 0
    group_raw: int = 0
    link_raw: int = 0
    offset: int = 0
    size: int = 0
    size_with_padding: int = 0
    created: int = 0
    modified: int = 0
    uid: int = 0
    gid: int = 0
    name_raw: bytes = b"\0" * NAME_SIZE
    extra: bytes = b"\0" * EXTRA_SIZE
    slot: int = -1

    @classmethod
    def unpack(cls, raw: bytes, slot: int) -> Descriptor:
        return cls(*_DESCRIPTOR.unpack(raw), slot=slot)

    def pack(self) -> bytes:
        return _DESCRIPTOR.pack(
            self.data_type, self.used, self.id, self.group_raw, self.link_raw, self.offset,
            self.size, self.size_with_padding, self.created, self.modified, self.uid, self.gid,
            self.name_raw, self.extra)

    def integrity_bytes(self, relative_id: int) -> bytes:
        """The 557 bytes a signature's descriptor digest covers (relative ID, no offset,
        no group, no modification time)."""
        head = _INTEGRITY_FIELDS.pack(self.data_type, self.used, relative_id, self.link_raw,
                                      self.size, self.created, self.uid, self.gid)
        return head + self.name_raw + self.extra

    # --- decoded views ----------------------------------------------------------------

    @property
    def group(self) -> int:
        """Group number, 0 when in no group."""
        return self.group_raw & ~GROUP_MASK & 0xFFFFFFFF

    @property
    def link(self) -> tuple[int, bool]:
        """(linked ID, is_group); (0, False) when not linked."""
        value = self.link_raw & ~GROUP_MASK & 0xFFFFFFFF
        return value, (self.link_raw & GROUP_MASK) == GROUP_MASK

    @property
    def name(self) -> str:
        return cstring(self.name_raw)

    @property
    def type_name(self) -> str:
        return type_name(self.data_type, DATA_TYPE_NAMES)

    def partition(self) -> tuple[int, int, str]:
        """(fs type, partition type, Go arch name) of a partition object."""
        fs, part = struct.unpack_from("<ii", self.extra)
        return fs, part, arch_name(self.extra[8:11])

    def signature(self) -> tuple[int, bytes | None]:
        """(hash type, fingerprint or None) of a signature object."""
        (hash_type,) = struct.unpack_from("<i", self.extra)
        entity = self.extra[4:24]
        return hash_type, (None if entity == b"\0" * 20 else entity)

    def crypto_message(self) -> tuple[int, int]:
        return struct.unpack_from("<ii", self.extra)

    def sbom_format(self) -> int:
        return struct.unpack_from("<i", self.extra)[0]

    def oci_digest(self) -> str:
        return cstring(self.extra[:128])

    def describe_type(self) -> str:
        """The type column of a listing: "FS (Squashfs/*System/amd64)" and the like."""
        base = self.type_name
        if self.data_type == DataType.PARTITION:
            fs, part, arch = self.partition()
            return (f"{base} ({type_name(fs, FS_TYPE_NAMES)}/"
                    f"{type_name(part, PART_TYPE_NAMES)}/{arch})")
        if self.data_type == DataType.SIGNATURE:
            return f"{base} ({type_name(self.signature()[0], HASH_TYPE_NAMES)})"
        if self.data_type == DataType.CRYPTO_MESSAGE:
            fmt, msg = self.crypto_message()
            return (f"{base} ({type_name(fmt, FORMAT_TYPE_NAMES)}/"
                    f"{type_name(msg, MESSAGE_TYPE_NAMES)})")
        if self.data_type == DataType.SBOM:
            return f"{base} ({type_name(self.sbom_format(), SBOM_FORMAT_NAMES)})"
        return base


def pad(data: bytes, size: int, what: str) -> bytes:
    """`data` NUL-padded to `size`; ValueError naming `what` when it does not fit."""
    if len(data) > size:
        raise ValueError(f"{what} too long ({len(data)} bytes, at most {size})")
    return data + b"\0" * (size - len(data))


def partition_extra(fs: int, part: int, arch: str) -> bytes:
    return pad(struct.pack("<ii", fs, part) + arch_code(arch), EXTRA_SIZE, "extra")


def signature_extra(hash_type: int, fingerprint: bytes | None) -> bytes:
    entity = pad(fingerprint or b"", 256, "signing entity")
    return pad(struct.pack("<i", hash_type) + entity, EXTRA_SIZE, "extra")


def crypto_message_extra(fmt: int, msg: int) -> bytes:
    return pad(struct.pack("<ii", fmt, msg), EXTRA_SIZE, "extra")


def sbom_extra(fmt: int) -> bytes:
    return pad(struct.pack("<i", fmt), EXTRA_SIZE, "extra")


def digest_extra(digest: str) -> bytes:
    return pad(digest.encode("ascii"), EXTRA_SIZE, "digest")
