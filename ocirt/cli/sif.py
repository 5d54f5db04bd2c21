"""`ocirt sif <subcommand>`: inspect, build, sign, verify and run SIF images.

Parses the subcommand's own flags with ocirt's parser and makes one call into
`ocirt.sif`; the library does the work. Listings follow siftool's layout so that users
of Singularity's tools read them without surprise.
"""

from __future__ import annotations

import os
import sys

from ocirt.cli.parser import BOOL, INT, LIST, STR, Command, Flag, check_arg_count, parse
from ocirt.cli.parser import command_help as _command_help
from ocirt.errors import OcirtError, UnknownCommand, UsageError

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only

if TYPE_CHECKING:
    from ocirt.cli import Globals
    from ocirt.cli.parser import Options

_KEY = Flag("key, k", LIST, "PEM key file (repeat for several keys)", metavar="FILE")
_PGP = Flag("pgp-key", LIST, "armored OpenPGP key file (repeat for several keys)",
            metavar="FILE")
_GROUP = Flag("group, g", LIST, "only this object group (repeatable)", metavar="ID")
_OBJECT = Flag("object, i", LIST, "only this object (repeatable)", metavar="ID")
_DATATYPES = {"deffile": 1, "envvar": 2, "labels": 3, "partition": 4, "signature": 5,
              "json": 6, "generic": 7, "cryptomessage": 8, "sbom": 9, "oci-index": 10,
              "oci-blob": 11}

SUBCOMMANDS: dict[str, Command] = {}


def _sub(cmd: Command) -> None:
    SUBCOMMANDS[cmd.name] = cmd


_sub(Command("list", "list", "list the data objects of an image (like siftool list)",
             "IMAGE", (), 1, 1))
_sub(Command("header", "header", "show the global header of an image", "IMAGE", (), 1, 1))
# siftool writes the object ID first (`siftool info 2 image.sif`); ocirt's own order is
# IMAGE ID. Both are taken: the image is the argument that names a file (ocirt.cli.sif
# _image_and_id).
_EITHER_ORDER = ("The image and the object ID may come in either order: IMAGE ID, or ID IMAGE "
                 "as siftool\ntakes them.")
_sub(Command("info", "info", "show everything a descriptor says about one object",
             "IMAGE ID | ID IMAGE", (), 2, 2, _EITHER_ORDER))
_sub(Command("dump", "dump", "write the data of one object to standard output",
             "IMAGE ID | ID IMAGE", (), 2, 2, _EITHER_ORDER))
_sub(Command(
    "new", "new", "create an empty image", "IMAGE",
    (Flag("launch-script", STR, "launch script (the first line of the file)", ""),
     Flag("deterministic", BOOL, "nil UUID and zero timestamps (reproducible images)"),
     Flag("capacity", INT, "descriptor table capacity", 48)), 1, 1))
_sub(Command(
    "create", "create", "build an image from a root file system directory or an OCI image "
    "layout", "--rootfs DIR | --oci DIR[:REF]  IMAGE",
    (Flag("rootfs", STR, "root file system directory", "", metavar="DIR"),
     Flag("oci", STR, "OCI image layout directory (skopeo copy ... oci:DIR, umoci), "
          "optionally DIR:REF", "", metavar="DIR[:REF]"),
     Flag("deffile", STR, "definition file to store in the image", "", metavar="FILE"),
     Flag("label", LIST, "label KEY=VALUE (repeatable)", metavar="KEY=VALUE"),
     Flag("env", LIST, "environment variable KEY=VALUE (repeatable)", metavar="KEY=VALUE"),
     Flag("env-file", STR, "environment script to store in the image", "", metavar="FILE"),
     Flag("runscript", STR, "command run by the image (a shell script body)", ""),
     Flag("arch", STR, "architecture (Go name, e.g. amd64; default: the host's)", ""),
     Flag("compression", STR, "squashfs compression (gzip, xz, zstd, lz4, lzo)", "gzip"),
     Flag("no-launch-script", BOOL, "leave out the #!/usr/bin/env run-singularity line")),
    1, 1,
    "From --rootfs the directory is squashed as it is (a /.singularity.d is added if the\n"
    "directory has none). From --oci the layers of the image are applied in order\n"
    "(whiteouts included) and the image config is kept as the JSON object\n"
    "oci-config.json, so `ocirt sif bundle` runs its Entrypoint/Cmd/Env/WorkingDir/User."))
_sub(Command(
    "add", "add", "add a data object from a file", "IMAGE FILE",
    (Flag("datatype", STR, "type: 1-11 or deffile, envvar, labels, partition, signature, "
          "json, generic, cryptomessage, sbom, oci-index, oci-blob", "generic"),
     Flag("partfs", INT, "partition file system (1 squashfs, 2 ext3, 3 archive, 4 raw, 5 "
          "encrypted squashfs)", 1),
     Flag("parttype", INT, "partition type (1 system, 2 primary system, 3 data, 4 overlay)",
          3),
     Flag("partarch", STR, "partition architecture: a Go name (amd64) or siftool's number "
          "(2); default: the host's", ""),
     Flag("signhash", STR, "signature hash: 1 sha256, 2 sha384, 3 sha512, 4 blake2s-256, "
          "5 blake2b-256 (default sha256)", ""),
     Flag("signentity", STR, "signing entity: the key's 40-hex-digit fingerprint", ""),
     Flag("sbomformat", STR, "SBOM format (needed with --datatype sbom): cyclonedx-json, "
          "cyclonedx-xml, github-json, spdx-json, spdx-rdf, spdx-tag-value, spdx-yaml, "
          "syft-json", ""),
     Flag("cmformat", STR, "cryptographic message format: 1 openpgp, 2 pem", ""),
     Flag("cmtype", STR, "cryptographic message type: 0x100 clear-signature, 0x200 rsa-oaep",
          ""),
     Flag("groupid", INT, "group (default 1)", 1),
     Flag("no-group", BOOL, "put the object in no group"),
     Flag("linkid, link", INT, "link to this object ID", 0),
     Flag("link-group", INT, "link to this group", 0),
     Flag("alignment", INT, "data alignment (default 4096 for partitions, none otherwise)",
          -1),
     Flag("name, filename", STR, "object name (default: the file's base name)", None)), 2, 2,
    "The metadata flags are siftool's (--signhash, --signentity, --sbomformat, --link,\n"
    "--filename); --cmformat and --cmtype set what the reference library's\n"
    "OptCryptoMessageMetadata does. Each is refused with a data type it does not apply to."))
_sub(Command(
    "del", "delete", "delete a data object", "IMAGE ID | ID IMAGE",
    (Flag("zero", BOOL, "overwrite the object's data with zeros"),
     Flag("compact", BOOL, "shrink the file (only when the object is the last one)")), 2, 2,
    _EITHER_ORDER))
_sub(Command("setprim", "setprim", "make a system partition the primary one",
             "IMAGE ID | ID IMAGE", (), 2, 2, _EITHER_ORDER))
_sub(Command(
    "keygen", "keygen", "generate a signing key pair: PREFIX.key and PREFIX.pub (pgp: "
    "PREFIX.secret.asc and PREFIX.asc)", "PREFIX",
    (Flag("type, t", STR, "ecdsa, ed25519, rsa or pgp", "ecdsa"),
     Flag("curve", STR, "ECDSA curve: p256, p384 or p521", "p256"),
     Flag("bits", INT, "RSA key size", 3072)), 1, 1))
_sub(Command("keyid", "keyid", "print the key ID (as DSSE envelopes record it) of PEM keys",
             "KEY...", (), 1, None))
_sub(Command(
    "sign", "sign", "sign an image (one signature per group, or the chosen objects)",
    "--key PRIVATE.pem | --pgp-key SECRET.asc  IMAGE",
    (_KEY, Flag("pgp-key", STR, "armored OpenPGP secret key (no passphrase)", "",
                metavar="FILE"), _GROUP, _OBJECT), 1, 1,
    "Several --key flags make one DSSE envelope signed by every key; --key and --pgp-key\n"
    "together add one signature of each kind."))
_sub(Command(
    "verify", "verify", "verify an image's signatures; exits 0 only when it is valid",
    "[--key PUBLIC.pem]... [--pgp-key PUBLIC.asc]... IMAGE",
    (_KEY, _PGP, _GROUP, _OBJECT,
     Flag("legacy", BOOL, "verify legacy (Singularity < 3.6) signatures instead"),
     Flag("legacy-all", BOOL, "verify a legacy signature for every object"),
     Flag("policy", STR, "verification policy file (trusted keys)", "", metavar="FILE")),
    1, 1))
_sub(Command(
    "bundle", "bundle", "make an OCI bundle (config.json + rootfs/) from an image",
    "IMAGE BUNDLE [-- ARGS...]",
    (Flag("unpack", BOOL, "extract the root file system (unsquashfs) instead of mounting"),
     Flag("fuse", BOOL, "mount with squashfuse even as root"),
     Flag("writable", BOOL, "writable session on the image's ext3 overlay partition"),
     Flag("writable-tmpfs", BOOL, "writable session with a tmpfs upper directory"),
     Flag("verify", BOOL, "refuse the image unless it verifies with the given keys"),
     _KEY, _PGP,
     Flag("policy", STR, "verification policy file (trusted keys); implies --verify", "",
          metavar="FILE"),
     Flag("tty, t", BOOL, "give the process a terminal"),
     Flag("exec", BOOL, "run ARGS as the command (Singularity's exec) instead of passing "
          "them to the runscript")),
    2, None,
    "By default the image's primary squashfs partition is mounted read-only in place\n"
    "(a loop device as root, squashfuse otherwise). config.json comes from the image:\n"
    "Singularity's /.singularity.d (runscript, environment scripts, labels) or an\n"
    "embedded OCI image config. Undo with `ocirt sif unbundle BUNDLE`."))
_sub(Command("unbundle", "unbundle", "unmount and remove what `sif bundle` made",
             "BUNDLE", (), 1, 1))


def main(g: Globals, opts: Options, args: list[str]) -> int:
    if not args or args[0] in ("help", "-h", "--help"):
        return _help(args[1:])
    cmd = SUBCOMMANDS.get(args[0])
    if cmd is None:
        raise UnknownCommand(f"No help topic for 'sif {args[0]}'")
    try:
        sub_opts, sub_args = parse(cmd.flags, args[1:], interspersed=True)
        if sub_opts.help:
            sys.stdout.write(_command_help(cmd, "ocirt sif"))
            return 0
        check_arg_count(cmd, sub_args)
    except UsageError as exc:
        sys.stderr.write(f"Incorrect Usage: {exc.message}\n\n{_command_help(cmd, 'ocirt sif')}")
        raise OcirtError(exc.message) from None
    return int(globals()["_" + cmd.handler](sub_opts, sub_args) or 0)


def _help(topics: list[str]) -> int:
    if topics:
        cmd = SUBCOMMANDS.get(topics[0])
        if cmd is None:
            raise UnknownCommand(f"No help topic for 'sif {topics[0]}'")
        sys.stdout.write(_command_help(cmd, "ocirt sif"))
        return 0
    lines = ["NAME:", "   ocirt sif - work with SIF (single-file) images", "", "USAGE:",
             "   ocirt sif <subcommand> [options] [arguments...]", "", "SUBCOMMANDS:"]
    lines += [f"   {name.ljust(10)} {cmd.summary}" for name, cmd in SUBCOMMANDS.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None


def _ints(values: list[str] | None, what: str) -> list[int]:
    return [_int(v, what) for v in values or []]


def _image_and_id(args: list[str]) -> tuple[str, int]:
    """(image, object ID) from `IMAGE ID` (ocirt) or `ID IMAGE` (siftool): the image is
    the argument that names a file and the ID the one that is a number. Only when both
    are numbers naming files is the order unclear, and that is an error."""
    first, second = args

    def number(text: str) -> int | None:
        try:
            return int(text, 10)
        except ValueError:
            return None

    fits = [(image, number(oid)) for image, oid in ((first, second), (second, first))
            if number(oid) is not None and os.path.exists(image)]
    if len(fits) == 2:
        raise UsageError(f"{first!r} and {second!r} are both numbers and files: write the "
                         f"image as ./{first} or ./{second}")
    if not fits:  # no file yet: the number is the ID, and opening the other says why
        if number(second) is None and number(first) is not None:
            fits = [(second, number(first))]
        else:
            fits = [(first, _int(second, "object ID"))]
    image, oid = fits[0]
    assert oid is not None
    return image, oid


# --- inspection ----------------------------------------------------------------------

def _list(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import Image

    with Image.open(args[0]) as image:
        rows = [("ID", "GROUP", "LINK", "SIF POSITION (start-end)", "SIZE", "TYPE", "NAME")]
        for d in image.objects():
            link, is_group = d.link
            rows.append((
                str(d.id), str(d.group) if d.group else "NONE",
                "NONE" if not link else (f"{link} (G)" if is_group else str(link)),
                f"{d.offset}-{d.offset + d.size}", str(d.size), d.describe_type(), d.name))
    _table(rows)
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        out.append(("  ".join(cells)).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


def _header(opts: Options, args: list[str]) -> int:
    from ocirt.sif import format as fmt
    from ocirt.sif.image import Image

    with Image.open(args[0]) as image:
        h = image.header
        rows = []
        if h.launch_script_text:
            rows.append(("Launch Script:", h.launch_script_text.rstrip("\n")))
        rows.append(("Version:", h.version_text))
        if h.arch_name != "unknown":
            rows.append(("Primary Architecture:", h.arch_name))
        if h.id != b"\0" * 16:
            rows.append(("ID:", h.uuid))
        for label, value in (("Created At:", h.created), ("Modified At:", h.modified)):
            if value != fmt.ZERO_TIME:
                rows.append((label, _utc(value)))
        rows += [("Descriptors Free:", str(h.descriptors_free)),
                 ("Descriptors Total:", str(h.descriptors_total)),
                 ("Descriptors Offset:", str(h.descriptors_offset)),
                 ("Descriptors Size:", _readable(h.descriptors_size)),
                 ("Data Offset:", str(h.data_offset)),
                 ("Data Size:", _readable(h.data_size))]
    _table(rows)
    return 0


def _utc(seconds: int) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _readable(size: int) -> str:
    """siftool's sizes: bytes below 1 KiB, else rounded in the largest binary unit."""
    if -1024 < size < 1024:
        return f"{size} B"
    value, unit = float(size), 0
    while abs(value) >= 1024 and unit < 6:
        value /= 1024
        unit += 1
    return f"{round(value):.0f} {'KMGTPE'[unit - 1]}iB"


def _info(opts: Options, args: list[str]) -> int:
    from ocirt.sif import format as fmt
    from ocirt.sif.format import DataType
    from ocirt.sif.image import Image

    path, oid = _image_and_id(args)
    with Image.open(path) as image:
        d = image.get(oid)
        link, is_group = d.link
        rows = [("Data Type:", d.type_name), ("ID:", str(d.id)),
                ("Group ID:", str(d.group) if d.group else "NONE"),
                ("Linked ID:", "NONE" if not link else f"{link}{' (G)' if is_group else ''}"),
                ("Offset:", str(d.offset)), ("Size:", str(d.size))]
        for label, value in (("Created At:", d.created), ("Modified At:", d.modified)):
            if value != fmt.ZERO_TIME:
                rows.append((label, _utc(value)))
        if d.name:
            rows.append(("Name:", d.name))
        rows += _type_rows(d, DataType)
    _table(rows)
    return 0


def _type_rows(d, DataType) -> list[tuple[str, str]]:  # noqa: N803 - the enum, passed in
    from ocirt.sif import format as fmt

    if d.data_type == DataType.PARTITION:
        fs, part, arch = d.partition()
        return [("Filesystem Type:", fmt.type_name(fs, fmt.FS_TYPE_NAMES)),
                ("Partition Type:", fmt.type_name(part, fmt.PART_TYPE_NAMES)),
                ("Architecture:", arch)]
    if d.data_type == DataType.SIGNATURE:
        hash_type, entity = d.signature()
        rows = [("Hash Type:", fmt.type_name(hash_type, fmt.HASH_TYPE_NAMES))]
        return rows + ([("Entity:", entity.hex().upper())] if entity else [])
    if d.data_type == DataType.CRYPTO_MESSAGE:
        f, m = d.crypto_message()
        return [("Format Type:", fmt.type_name(f, fmt.FORMAT_TYPE_NAMES)),
                ("Message Type:", fmt.type_name(m, fmt.MESSAGE_TYPE_NAMES))]
    if d.data_type == DataType.SBOM:
        return [("Format:", fmt.type_name(d.sbom_format(), fmt.SBOM_FORMAT_NAMES))]
    if d.data_type in (DataType.OCI_ROOT_INDEX, DataType.OCI_BLOB):
        return [("Digest:", d.oci_digest())]
    return []


def _dump(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import Image

    path, oid = _image_and_id(args)
    with Image.open(path) as image:
        d = image.get(oid)
        out = sys.stdout.buffer
        for chunk in image.chunks(d):
            out.write(chunk)
        out.flush()
    return 0


# --- building and editing ------------------------------------------------------------

def _new(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import create

    script = opts.launch_script.replace("\\n", "\n")
    if script and not script.endswith("\n"):
        script += "\n"
    if opts.capacity < 1:
        raise UsageError("--capacity must be at least 1")
    create(args[0], launch_script=script, deterministic=opts.deterministic,
           capacity=opts.capacity)
    return 0


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--{what} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _create(opts: Options, args: list[str]) -> int:
    from ocirt.sif import build

    if bool(opts.rootfs) == bool(opts.oci):
        raise UsageError("give exactly one of --rootfs DIR or --oci DIR")
    spec = build.BuildSpec(
        deffile=_read_text(opts.deffile) if opts.deffile else None,
        labels=_pairs(opts.label, "label"), env=_pairs(opts.env, "env"),
        env_script=_read_text(opts.env_file) if opts.env_file else None,
        runscript=opts.runscript or None, arch=opts.arch or None,
        compression=opts.compression, launch_script=not opts.no_launch_script,
        progress=sys.stderr.isatty())
    if opts.rootfs:
        build.from_rootfs(opts.rootfs, args[0], spec)
    else:
        layout, _, ref = opts.oci.partition(":")
        build.from_oci_layout(layout, args[0], spec, ref or None)
    return 0


def _read_text(path: str) -> str:
    from ocirt.errors import os_error_text
    from ocirt.linux.files import read_regular

    try:
        return read_regular(path).decode("utf-8")
    except OSError as exc:
        raise OcirtError(f"read {os_error_text(exc)}") from None
    except UnicodeDecodeError as exc:
        raise OcirtError(f"read {path}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None


def _datatype(text: str) -> int:
    from ocirt.sif.format import DataType

    value = _DATATYPES.get(text.lower())
    if value is None:
        value = _int(text, "--datatype")
    if 1 <= value <= 11:
        value += 0x4000
    if value not in set(DataType):
        raise UsageError(f"--datatype: unknown data type {text!r}")
    return value


def _add(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import Image, ObjectInput, SIFError

    data_type = _datatype(opts.datatype)
    try:
        extra = _extra(opts, data_type)
    except ValueError as exc:
        raise SIFError(str(exc)) from None
    obj = ObjectInput(
        data_type, path=args[1],
        name=os.path.basename(args[1]) if opts.name is None else opts.name,
        group=0 if opts.no_group else opts.groupid, link=opts.linkid,
        link_group=opts.link_group, alignment=None if opts.alignment < 0 else opts.alignment,
        extra=extra)
    with Image.open(args[0], writable=True) as image:
        d = image.add(obj)
    sys.stdout.write(f"added object {d.id}\n")
    return 0


# Which --datatype each metadata flag belongs to (given with another: a usage error).
_META_FLAGS = {"signhash": "signature", "signentity": "signature", "sbomformat": "sbom",
               "cmformat": "cryptomessage", "cmtype": "cryptomessage"}


def _extra(opts: Options, data_type: int) -> bytes:
    """The descriptor's type-specific metadata from the add flags, as siftool (and the
    reference library's Opt*Metadata) encode it."""
    from ocirt.sif import format as fmt
    from ocirt.sif.format import DataType

    wanted = {DataType.SIGNATURE: "signature", DataType.SBOM: "sbom",
              DataType.CRYPTO_MESSAGE: "cryptomessage"}.get(data_type)
    for name, kind in _META_FLAGS.items():
        if getattr(opts, name) and kind != wanted:
            raise UsageError(f"--{name} goes with --datatype {kind}")
    if data_type == DataType.PARTITION:
        return fmt.partition_extra(opts.partfs, opts.parttype, _arch(opts.partarch))
    if data_type == DataType.SIGNATURE:
        return fmt.signature_extra(_named(opts.signhash or "sha256", "--signhash", _HASHES),
                                   _fingerprint(opts.signentity))
    if data_type == DataType.SBOM:
        if not opts.sbomformat:
            raise UsageError("with --datatype sbom, --sbomformat must be given")
        return fmt.sbom_extra(_named(opts.sbomformat, "--sbomformat", _SBOM_FORMATS))
    if data_type == DataType.CRYPTO_MESSAGE and (opts.cmformat or opts.cmtype):
        if not (opts.cmformat and opts.cmtype):
            raise UsageError("--cmformat and --cmtype go together")
        return fmt.crypto_message_extra(_named(opts.cmformat, "--cmformat", _CM_FORMATS),
                                        _named(opts.cmtype, "--cmtype", _CM_TYPES))
    return b"\0" * fmt.EXTRA_SIZE


_HASHES = {"sha256": 1, "sha384": 2, "sha512": 3, "blake2s-256": 4, "blake2b-256": 5}
_SBOM_FORMATS = {"cyclonedx-json": 1, "cyclonedx-xml": 2, "github-json": 3, "github": 3,
                 "spdx-json": 4, "spdx-rdf": 5, "spdx-tag-value": 6, "spdx-yaml": 7,
                 "syft-json": 8}
_CM_FORMATS = {"openpgp": 1, "pem": 2}
_CM_TYPES = {"clear-signature": 0x100, "rsa-oaep": 0x200}


def _named(text: str, flag: str, names: dict[str, int]) -> int:
    """A value by name or by its number (as siftool takes it)."""
    value = names.get(text.lower())
    if value is None:
        try:
            value = int(text, 0)
        except ValueError:
            value = None
    if value not in names.values():
        raise UsageError(f"{flag}: unknown value {text!r} (one of {', '.join(names)})")
    return value


def _fingerprint(text: str) -> bytes | None:
    if not text:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--signentity: {text!r} is not hexadecimal") from None
    if len(raw) != 20:
        raise UsageError(f"--signentity: a fingerprint has 20 bytes (40 hex digits), got "
                         f"{len(raw)}")
    return raw


def _arch(text: str) -> str:
    """A Go architecture name, from a name or siftool's --partarch number."""
    from ocirt.sif import format as fmt

    if not text:
        return fmt.host_arch()
    if text.isdigit():
        by_code = {int(code): name for name, code in fmt.ARCH_CODES.items()}
        if int(text) in by_code:
            return by_code[int(text)]
    return text


def _delete(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import Image

    path, oid = _image_and_id(args)
    with Image.open(path, writable=True) as image:
        image.delete(oid, zero=opts.zero, compact=opts.compact)
    return 0


def _setprim(opts: Options, args: list[str]) -> int:
    from ocirt.sif.image import Image

    path, oid = _image_and_id(args)
    with Image.open(path, writable=True) as image:
        image.set_primary(oid)
    return 0


# --- keys, signing, verification -----------------------------------------------------

def _keygen(opts: Options, args: list[str]) -> int:
    from ocirt.sif import keys

    if opts.type == "pgp":
        from ocirt.sif import pgp

        pub, sec, fpr = pgp.generate(args[0])
        sys.stdout.write(f"{sec}\n{pub}\nfingerprint {fpr}\n")
        return 0
    key = keys.generate(opts.type, opts.curve, opts.bits)
    priv, pub = keys.write_pair(key, args[0])
    sys.stdout.write(f"{priv}\n{pub}\nkey ID {keys.key_id(key.public_key())}\n")
    return 0


def _keyid(opts: Options, args: list[str]) -> int:
    from ocirt.sif import keys

    for path in args:
        key = keys.load_public(path)
        sys.stdout.write(f"{keys.key_id(key)}  {keys.describe(key)}  {path}\n")
    return 0


def _sign(opts: Options, args: list[str]) -> int:
    from ocirt.sif import integrity, keys
    from ocirt.sif.image import Image

    if not opts.key and not opts.pgp_key:
        raise UsageError("give a private key: --key PRIVATE.pem or --pgp-key SECRET.asc")
    signers: list = []
    if opts.key:
        signers.append(integrity.DSSESigner([keys.load_private(p) for p in opts.key]))
    gpg = None
    try:
        if opts.pgp_key:
            from ocirt.sif import pgp

            gpg = pgp.GPG()
            fingerprints = gpg.import_keys([opts.pgp_key], secret=True)
            signers.append(integrity.PGPSigner(gpg, fingerprints[0]))
        with Image.open(args[0], writable=True) as image:
            added = integrity.sign(image, signers, _ints(opts.group, "--group"),
                                   _ints(opts.object, "--object"))
    finally:
        if gpg is not None:
            gpg.close()
    for d in added:
        sys.stdout.write(f"added signature object {d.id} for group {d.link[0]}\n")
    return 0


def _verify(opts: Options, args: list[str]) -> int:
    from ocirt.sif import policy as pol

    policy = pol.load_policy(opts.policy) if opts.policy else pol.Policy()
    policy = policy.with_keys(opts.key or [], opts.pgp_key or [])
    if opts.legacy or opts.legacy_all:
        policy.legacy = True
    results = pol.verify_image(args[0], policy, groups=_ints(opts.group, "--group"),
                               objects=_ints(opts.object, "--object"),
                               legacy_all=opts.legacy_all)
    for r in results:
        objects = ", ".join(str(i) for i in r.objects)
        sys.stdout.write(f"signature {r.signature_id} ({r.kind}) over object(s) {objects}: "
                         f"verified, signed by {', '.join(r.signers)}\n")
    sys.stdout.write(f"{args[0]}: verified\n")
    return 0


# --- bundles -------------------------------------------------------------------------

def _bundle(opts: Options, args: list[str]) -> int:
    from ocirt.sif import bundle
    from ocirt.sif import policy as pol

    if opts.writable and opts.writable_tmpfs:
        raise UsageError("--writable and --writable-tmpfs exclude each other")
    if opts.unpack and opts.fuse:
        raise UsageError("--unpack and --fuse exclude each other")
    policy = None
    if opts.policy or opts.verify or opts.key or opts.pgp_key:
        policy = pol.load_policy(opts.policy) if opts.policy else pol.Policy()
        policy = policy.with_keys(opts.key or [], opts.pgp_key or [])
    options = bundle.BundleOptions(
        unpack=opts.unpack, fuse=opts.fuse,
        writable="overlay" if opts.writable else ("tmpfs" if opts.writable_tmpfs else None),
        args=args[2:], exec_args=opts.exec, terminal=opts.tty, policy=policy,
        progress=sys.stderr.isatty())
    bundle.create_bundle(args[0], args[1], options)
    return 0


def _unbundle(opts: Options, args: list[str]) -> int:
    from ocirt.sif import bundle

    bundle.remove_bundle(args[0])
    return 0
