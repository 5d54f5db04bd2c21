"""A container's checkpoint carried inside a SIF image: one object group per checkpoint.

The group holds a JSON.Generic manifest (`ocirt-checkpoint.json`: container, time, the
files), the container's config.json (JSON.Generic, `criu/config.json`) and every CRIU
image file as a Generic/Raw object of its own (`criu/<file>`), so `sif list` shows them
and a signature over the group covers each one: a restore from a signed image verifies
the group first, and a changed byte in any object refuses the restore.
"""

from __future__ import annotations

import os

from ocirt import jsonio
from ocirt.sif.format import DataType
from ocirt.sif.image import Image, ObjectInput, SIFError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

MANIFEST = "ocirt-checkpoint.json"
PREFIX = "criu/"
CONFIG = PREFIX + "config.json"
_FORMAT = "ocirt.checkpoint.v1"


def image_files(images: str) -> list[str]:
    """The files of a CRIU images directory worth carrying: everything but CRIU's logs."""
    return sorted(n for n in os.listdir(images)
                  if not n.endswith(".log") and os.path.isfile(os.path.join(images, n)))


def store(sif: str, images: str, config: bytes, cid: str, created: str,
          signers: list[Any] | None = None) -> int:
    """Add the checkpoint in `images` (and `config`) to `sif` as a new group, signed by
    `signers` when given; returns the group number."""
    from ocirt.sif import integrity

    files = image_files(images)
    manifest = {"format": _FORMAT, "container": cid, "created": created, "files": files}
    with Image.open(sif, writable=True) as image:
        free = sum(1 for d in image.slots if not d.used)
        need = len(files) + 2 + len(signers or ())
        if need > free:
            raise SIFError(f"{sif}: {free} free descriptor slots, the checkpoint needs {need} "
                           "(make the image with a larger `sif create --capacity`)")
        group = max(image.group_ids(), default=0) + 1
        image.add(ObjectInput(DataType.GENERIC_JSON, data=jsonio.dumps(manifest).encode(),
                              name=MANIFEST, group=group))
        image.add(ObjectInput(DataType.GENERIC_JSON, data=config, name=CONFIG, group=group))
        for name in files:
            image.add(ObjectInput(DataType.GENERIC, path=os.path.join(images, name),
                                  name=PREFIX + name, group=group))
        if signers:
            integrity.sign(image, signers, groups=[group])
    return group


def checkpoints(image: Image) -> list[tuple[int, dict[str, Any]]]:
    """(group, manifest) of every checkpoint in the image, oldest first."""
    out = []
    for d in image.find(DataType.GENERIC_JSON, MANIFEST):
        try:
            manifest = jsonio.loads(image.read(d))
        except ValueError:
            raise SIFError(f"{image.path}: object {d.id}: corrupt checkpoint manifest") \
                from None
        if isinstance(manifest, dict) and manifest.get("format") == _FORMAT:
            out.append((d.group, manifest))
    return out


def extract(sif: str, dest: str, policy: Any = None) -> tuple[bytes, dict[str, Any]]:
    """Write the newest checkpoint's image files into `dest` (an empty directory) after
    verifying its group against `policy` (None: unverified); returns (config.json bytes,
    manifest)."""
    with Image.open(sif) as image:
        found = checkpoints(image)
        if not found:
            raise SIFError(f"{sif}: no checkpoint in this image (`ocirt checkpoint --sif`)")
        group, manifest = found[-1]
        if policy is not None:
            from ocirt.sif.policy import verify_image

            if policy.require and not policy.has_keys:
                raise SIFError(f"{sif}: the policy requires verification but names no key")
            verify_image(image, policy, groups=[group])
        objects = {d.name: d for d in image.group_objects(group)}
        if CONFIG not in objects:
            raise SIFError(f"{sif}: checkpoint group {group} has no {CONFIG}")
        for name in manifest.get("files") or []:
            d = objects.get(PREFIX + str(name))
            if d is None or "/" in str(name) or str(name).startswith("."):
                raise SIFError(f"{sif}: checkpoint group {group}: bad or missing file {name!r}")
            fd = os.open(os.path.join(dest, str(name)),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                for chunk in image.chunks(d):
                    os.write(fd, chunk)
            finally:
                os.close(fd)
        return image.read(objects[CONFIG]), manifest
