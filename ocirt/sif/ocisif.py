"""OCI-SIF images (SingularityCE 4): an OCI image layout stored as SIF objects.

The root `index.json` is the OCI.RootIndex object; manifests, configs and layers are
OCI.Blob objects found by the digest in their descriptor. Layers are squashfs file
systems, mounted in place like a native image's partition and stacked with overlayfs.
Every JSON blob read here is checked against its digest first.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ocirt import jsonio
from ocirt.sif.format import DataType, Descriptor, host_arch
from ocirt.sif.image import Image, SIFError

SQUASHFS_LAYER = "application/vnd.sylabs.image.layer.v1.squashfs"
EXT3_LAYER = "application/vnd.sylabs.image.layer.v1.ext3"
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


def is_oci_sif(image: Image) -> bool:
    return bool(image.find(DataType.OCI_ROOT_INDEX))


def blob(image: Image, digest: str) -> Descriptor:
    for d in image.find(DataType.OCI_BLOB):
        if d.oci_digest() == digest:
            return d
    raise SIFError(f"{image.path}: OCI blob {digest!r} not found")


def _json(image: Image, d: Descriptor, digest: str | None) -> Any:
    if d.size > 16 << 20:
        raise SIFError(f"{image.path}: object {d.id}: JSON blob too large")
    data = image.read(d)
    if digest is not None and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise SIFError(f"{image.path}: object {d.id}: content does not match {digest!r}")
    try:
        doc = jsonio.loads(data)
        jsonio.check_tree(doc)
    except jsonio.JSONContentError as exc:
        raise SIFError(f"{image.path}: object {d.id}: {exc.path_text or 'JSON'}: "
                       f"{exc.problem}") from None
    except ValueError as exc:
        raise SIFError(f"{image.path}: object {d.id}: {exc}") from None
    if not isinstance(doc, dict):
        raise SIFError(f"{image.path}: object {d.id}: not a JSON object")
    return doc


def manifest(image: Image, arch: str | None = None) -> dict[str, Any]:
    """The image manifest: the only one in the root index, or the one for linux/arch."""
    (root,) = image.find(DataType.OCI_ROOT_INDEX)[:1]
    doc = _json(image, root, None)
    for _depth in range(4):
        entries = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not entries:
            raise SIFError(f"{image.path}: OCI index without manifests")
        chosen = _choose(entries, arch or host_arch(), image.path)
        doc = _json(image, blob(image, chosen["digest"]), chosen["digest"])
        if doc.get("mediaType") not in _INDEX_TYPES and "manifests" not in doc:
            if not isinstance(doc.get("config"), dict) or \
                    not isinstance(doc.get("layers"), list):
                raise SIFError(f"{image.path}: OCI manifest without config or layers")
            return doc
    raise SIFError(f"{image.path}: OCI indexes nested too deeply")


def _choose(entries: list[Any], arch: str, path: str) -> dict[str, Any]:
    entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    if len(entries) == 1:
        return entries[0]
    for e in entries:
        platform = e.get("platform")
        if not isinstance(platform, dict):
            continue
        if platform.get("architecture") == arch and platform.get("os", "linux") == "linux":
            return e
    raise SIFError(f"{path}: no OCI image for linux/{arch}")


def config(image: Image, doc: dict[str, Any]) -> dict[str, Any]:
    digest = doc["config"].get("digest", "")
    cfg = _json(image, blob(image, digest), digest)
    if not isinstance(cfg, dict):
        raise SIFError(f"{image.path}: OCI image config is not a JSON object")
    return cfg


def squashfs_layers(image: Image, doc: dict[str, Any]) -> list[Descriptor]:
    """The layer blobs, bottom first; only squashfs layers can be mounted."""
    out = []
    for layer in doc["layers"]:
        media = layer.get("mediaType") if isinstance(layer, dict) else None
        if media != SQUASHFS_LAYER:
            raise SIFError(f"{image.path}: OCI layer type {media!r} is not supported "
                           "(squashfs layers only)")
        out.append(blob(image, layer.get("digest", "")))
    if not out:
        raise SIFError(f"{image.path}: OCI image without layers")
    return out
