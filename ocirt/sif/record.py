"""The record `ocirt sif bundle` leaves in a bundle (.ocirt-sif.json): reading it.

Apart from ocirt.sif.bundle because `create` reads it for every bundle (is this root one
that `--unpack` extracted?), and the bundle code imports the image format, hashlib and
dataclasses, ~15 ms that a plain OCI bundle must not pay.
"""

from __future__ import annotations

import os
import stat

from ocirt import jsonio
from ocirt.errors import OcirtError, SIFError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

RECORD = ".ocirt-sif.json"
WORKDIR = ".ocirt-sif"  # BUNDLE/WORKDIR: the scratch directories of its mounts


def unpacked_rootfs_devices(bundle: str, rootfs: str, hidden: tuple[str, ...]) -> list[str]:
    """For `create`: the device nodes in the root of a bundle `--unpack` made (none for
    any other bundle), outside the in-root directories in `hidden`."""
    try:
        st = os.lstat(os.path.join(bundle, RECORD))
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        return []
    if os.path.realpath(rootfs) != os.path.realpath(os.path.join(bundle, "rootfs")):
        return []
    try:
        mode = read_record(bundle).get("mode")
    except OcirtError:
        mode = "unpack"  # a record we cannot trust: check, do not skip
    if mode != "unpack":
        return []
    from ocirt.sif.unpack import device_nodes

    return device_nodes(rootfs, hidden)


def read_record(bundle: str) -> dict[str, Any]:
    """The bundle's record. It says what to unmount and remove, so it must be ours: a
    regular file owned by the caller (or root), writable by nobody else."""
    path = os.path.join(bundle, RECORD)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SIFError(f"{bundle}: not a bundle made by `ocirt sif bundle` (no {RECORD})") \
            from None
    except OSError as exc:
        raise SIFError(f"{path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        os.close(fd)
        raise SIFError(f"{path}: not written by this user (owner {st.st_uid}): refusing "
                       "to act on it")
    try:
        with os.fdopen(fd, "rb") as f:
            doc = jsonio.loads(f.read())
    except (OSError, ValueError) as exc:
        raise SIFError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("mode") not in ("mount", "unpack"):
        raise SIFError(f"{path}: not a SIF bundle record")
    return doc
