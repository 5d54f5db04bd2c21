"""The adapter: a SIF image becomes an OCI bundle (config.json + rootfs/).

By default the root partition is mounted read-only in place on BUNDLE/rootfs (nothing is
copied, which is what makes a large image start fast); `unpack` extracts it instead,
into BUNDLE/.ocirt-sif-unpack (private to us) and made safe there (ocirt.sif.unpack)
before it is renamed to BUNDLE/rootfs.
What was mounted or created is written to BUNDLE/.ocirt-sif.json before anything else
can fail, so `remove_bundle` (`ocirt sif unbundle`) can always take it back, and a
failure half-way undoes every step already taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ocirt import jsonio
from ocirt.errors import os_error_text
from ocirt.sif.image import Image, SIFError
from ocirt.sif.record import (  # noqa: F401
    RECORD,
    WORKDIR,
    read_record,
    unpacked_rootfs_devices,
)
from ocirt.undo import Undo

UNPACK_DIR = ".ocirt-sif-unpack"
_MAX_JSON = 16 << 20


@dataclass
class BundleOptions:
    unpack: bool = False
    fuse: bool = False
    writable: str | None = None  # None, "overlay" or "tmpfs"
    args: list[str] = field(default_factory=list)
    exec_args: bool = False
    terminal: bool = False
    policy: Any = None
    progress: bool = False
    # The image's layers already mounted read-only elsewhere (a mount shared by many
    # containers, ocirt.runtime.sharedroot), bottom first: the bundle's root is the one
    # layer itself, or a per-bundle overlay of them; nothing is mounted from the image.
    lowers: list[str] | None = None


def create_bundle(image_path: str, bundle: str, opts: BundleOptions) -> dict[str, Any]:
    """Make `bundle` (which must not exist, or be an empty directory) from the image.
    Returns the record stored in BUNDLE/.ocirt-sif.json.

    The image is opened once: what the policy verified is what gets mounted."""
    image_path = os.path.abspath(image_path)
    with Image.open(image_path) as image:
        if opts.policy is not None:
            from ocirt.sif.policy import verify_image

            verify_image(image, opts.policy)
        return _create_bundle(image, os.path.abspath(bundle), opts)


def create_bundle_from(image: Image, bundle: str, opts: BundleOptions) -> dict[str, Any]:
    """`create_bundle` from an already open (and, if need be, verified) image."""
    return _create_bundle(image, os.path.abspath(bundle), opts)


def _create_bundle(image: Image, bundle: str, opts: BundleOptions) -> dict[str, Any]:
    from ocirt.sif import mount

    meta, layers = _image_metadata(image)
    if opts.unpack and opts.writable == "overlay":
        raise SIFError("--unpack gives a writable root already; --writable needs a mount")
    undo = Undo()
    try:
        _make_empty_dir(bundle, undo)
        rootfs = os.path.join(bundle, "rootfs")
        record: dict[str, Any] = {"image": image.path, "rootfs": "rootfs",
                                  "mode": "unpack" if opts.unpack else "mount"}
        if opts.unpack:
            _write_record(bundle, record, undo)
            if len(layers) != 1:
                raise SIFError(f"{image.path}: --unpack handles single-layer images only")
            _unpack(image, layers[0], bundle, opts.progress, undo)
        elif opts.lowers and len(opts.lowers) == 1 and not opts.writable:
            rootfs = opts.lowers[0]
            record["mounts"] = mount.MountRecord(target=rootfs).to_json()
            _write_record(bundle, record, undo)
        else:
            _mkdir(rootfs, undo)
            if opts.lowers:
                mounted = mount.mount_over(opts.lowers, rootfs, os.path.join(bundle, WORKDIR),
                                           writable=opts.writable,
                                           fuse=True if opts.fuse else None)
            else:
                mounted = mount.mount_image(image.path, rootfs, os.path.join(bundle, WORKDIR),
                                            fuse=True if opts.fuse else None,
                                            writable=opts.writable, image=image)
            undo.push(mount.release, mounted, what="unmount the image")
            record["mounts"] = mounted.to_json()
            _write_record(bundle, record, undo)
        config = _config(rootfs, meta, opts)
        if rootfs != os.path.join(bundle, "rootfs"):
            config["root"]["path"] = rootfs  # the shared mount itself
        _write_json(os.path.join(bundle, "config.json"), config, undo)
    except BaseException:
        undo.run()
        raise
    return record


def _image_metadata(image: Image) -> tuple[Any, Any]:
    """(ImageMetadata, root layers) of the image."""
    from ocirt.sif import ocisif
    from ocirt.sif.format import DataType
    from ocirt.sif.mount import root_layers
    from ocirt.sif.runconfig import ImageMetadata

    image_path = image.path
    layers = root_layers(image)
    meta = ImageMetadata(image_path)
    if ocisif.is_oci_sif(image):
        meta.oci_config = ocisif.config(image, ocisif.manifest(image))
    for d in image.find(DataType.GENERIC_JSON, "oci-config.json"):
        if d.size > _MAX_JSON:
            raise SIFError(f"{image_path}: object {d.id} (oci-config.json) is too large")
        try:
            doc = jsonio.loads(image.read(d))
            jsonio.check_tree(doc)
        except jsonio.JSONContentError as exc:
            raise SIFError(f"{image_path}: object {d.id} (oci-config.json): "
                           f"{exc.path_text or 'JSON'}: {exc.problem}") from None
        except ValueError as exc:
            raise SIFError(f"{image_path}: object {d.id} (oci-config.json): {exc}") \
                from None
        if isinstance(doc, dict):
            meta.oci_config = doc
    for d in image.find(DataType.LABELS):
        if d.size > _MAX_JSON:
            continue
        try:
            doc = jsonio.loads(image.read(d))
            jsonio.check_tree(doc, allow_nul=True)  # labels become annotations
        except ValueError:  # JSONError and JSONContentError: labels are optional
            continue
        if isinstance(doc, dict):
            meta.labels.update({str(k): v for k, v in doc.items() if isinstance(v, str)})
    return meta, layers


def _config(rootfs: str, meta: Any, opts: BundleOptions) -> dict[str, Any]:
    from ocirt.sif.runconfig import RunOptions, build_config

    run = RunOptions(args=list(opts.args), exec_args=opts.exec_args, terminal=opts.terminal,
                     readonly=not (opts.unpack or opts.writable),
                     rootless=os.geteuid() != 0)
    return build_config(rootfs, meta, run)


def _make_empty_dir(path: str, undo: Undo) -> None:
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise SIFError(f"bundle {path}: exists and is not a directory")
        if os.listdir(path):
            raise SIFError(f"bundle {path}: directory is not empty")
        return
    _mkdir(path, undo)


def _mkdir(path: str, undo: Undo) -> None:
    try:
        os.mkdir(path, 0o755 if os.geteuid() == 0 else 0o700)
    except OSError as exc:
        raise SIFError(f"mkdir {os_error_text(exc)}") from None
    undo.push(_remove_empty_dir, path, what=f"remove {path}")


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _write_json(path: str, doc: dict[str, Any], undo: Undo) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(jsonio.dumps_pretty(doc, "\t") + "\n")
    os.replace(tmp, path)
    undo.push(_unlink, path, what=f"remove {path}")


def _write_record(bundle: str, record: dict[str, Any], undo: Undo) -> None:
    _write_json(os.path.join(bundle, RECORD), record, undo)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- unpacking -----------------------------------------------------------------------

def _unpack(image: Image, layer: Any, bundle: str, progress: bool, undo: Undo) -> None:
    """Extract into a directory nobody else can enter, make the tree safe there, and
    only then rename it to BUNDLE/rootfs; any failure removes all of it."""
    from ocirt.sif.mount import remove_tree
    from ocirt.sif.unpack import unpack_partition

    staging = os.path.join(bundle, UNPACK_DIR)
    try:
        os.mkdir(staging, 0o700)
    except OSError as exc:
        raise SIFError(f"mkdir {os_error_text(exc)}") from None
    undo.push(remove_tree, staging, what=f"remove {staging}")
    tree = os.path.join(staging, "rootfs")
    unpack_partition(image, layer, tree, progress)
    rootfs = os.path.join(bundle, "rootfs")
    os.rename(tree, rootfs)
    undo.push(remove_tree, rootfs, what=f"remove {rootfs}")
    os.rmdir(staging)


# --- removing ------------------------------------------------------------------------

def remove_bundle(bundle: str) -> None:
    """Unmount and remove everything `create_bundle` made; the bundle directory itself
    goes too when nothing else is left in it."""
    from ocirt.sif import mount

    bundle = os.path.realpath(bundle)
    record = read_record(bundle)
    rootfs = os.path.join(bundle, "rootfs")
    if record["mode"] == "mount":
        mounts = mount.MountRecord.from_json(record.get("mounts") or {})
        _check_steps_inside(bundle, mounts)
        mount.release(mounts)
    else:
        for tree in (os.path.join(bundle, UNPACK_DIR), rootfs):
            _remove_tree(tree)
    for path in (os.path.join(bundle, WORKDIR), rootfs):
        try:
            _remove_empty_dir(path)
        except OSError as exc:
            raise SIFError(f"rmdir {os_error_text(exc)}") from None
    for name in ("config.json", RECORD):
        _unlink(os.path.join(bundle, name))
    try:
        os.rmdir(bundle)
    except OSError:
        pass  # the user put other files there: leave them


def _check_steps_inside(bundle: str, record: Any) -> None:
    """Every path the record would unmount or remove lies inside the bundle."""
    for step in record.steps:
        real = os.path.realpath(step["path"])
        if not real.startswith(bundle + os.sep):
            raise SIFError(f"{bundle}/{RECORD}: step {step['path']!r} is outside the "
                           "bundle: refusing to act on it")


def _remove_tree(path: str) -> None:
    """rmtree (read-only directories included), refusing when something is mounted below
    `path` (rmtree would descend into it and delete what the mount shows)."""
    from ocirt.sif.mount import remove_tree

    if os.path.lexists(path):
        remove_tree(path)
