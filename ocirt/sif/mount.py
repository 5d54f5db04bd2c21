"""Mounting a SIF partition in place, and undoing it.

As root, the partition is mounted from a loop device limited to its byte range
(offset/sizelimit, read-only, autoclear), with nodev and nosuid. Without privileges,
`squashfuse -o offset=N` serves it through FUSE. A writable session stacks an overlay
on top: the upper layer is the image's ext3 overlay partition (root) or a tmpfs
(root) / a scratch directory with fuse-overlayfs (unprivileged).

Everything mounted is described by a `MountRecord`, a JSON-serialisable list of steps
that the caller stores (a bundle writes it next to config.json; the runtime can keep it
in its state) and gives back to `release` to undo. If a step fails, the steps already
taken are undone before the error is raised: no loop device, mount or FUSE daemon is
left behind.

Library interface for the runtime:

    record = mount_image(image_path, target, workdir, fuse=None, writable=None)
    ...                                   # the container runs with target as its root
    release(record)                       # after the container is deleted
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ocirt.errors import OcirtError, os_error_text
from ocirt.sif.format import DataType, Descriptor, FSType, PartType
from ocirt.sif.image import Image, SIFError

SQUASHFS_MAGIC = b"hsqs"
EXT_MAGIC = 0xEF53


class MountError(OcirtError):
    """A partition could not be mounted (or unmounted)."""


@dataclass
class MountRecord:
    """What `mount_image` did, oldest first; `release` undoes it newest first.

    Each step is {"kind": "mount"|"fuse"|"dir"|"tree", "path": ...}: a kernel mount, a
    FUSE mount (its daemon exits when it is unmounted), a directory we created (removed
    when empty), or a scratch tree (removed with its contents).
    """

    steps: list[dict[str, str]] = field(default_factory=list)
    target: str = ""
    writable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "writable": self.writable, "steps": self.steps}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MountRecord:
        steps = doc.get("steps")
        if not isinstance(steps, list) or not all(
                isinstance(s, dict) and isinstance(s.get("path"), str) for s in steps):
            raise MountError("mount record: malformed steps")
        return cls(list(steps), str(doc.get("target", "")), bool(doc.get("writable")))


def is_root() -> bool:
    return os.geteuid() == 0


# --- choosing and checking partitions ------------------------------------------------

def root_partition(image: Image) -> Descriptor:
    """The partition a container boots from: the primary system partition (or, in an
    image without one, its only system partition)."""
    primary = image.primary_partition()
    if primary is None:
        systems = [d for d in image.objects() if d.data_type == DataType.PARTITION
                   and d.partition()[1] == PartType.SYSTEM]
        if len(systems) != 1:
            raise SIFError(f"{image.path}: no primary system partition to run")
        primary = systems[0]
    fs = primary.partition()[0]
    if fs == FSType.ENCRYPTED_SQUASHFS:
        raise SIFError(f"{image.path}: encrypted partitions are not supported")
    if fs not in (FSType.SQUASHFS, FSType.EXT3):
        raise SIFError(f"{image.path}: object {primary.id}: partition file system "
                       f"{fs} cannot be mounted (squashfs or ext3 only)")
    check_magic(image, primary)
    return primary


def overlay_partition(image: Image, group_raw: int) -> Descriptor:
    """The ext3 overlay partition in the root partition's group."""
    for d in image.objects():
        if (d.data_type == DataType.PARTITION and d.group_raw == group_raw
                and d.partition()[:2] == (FSType.EXT3, PartType.OVERLAY)):
            check_magic(image, d)
            return d
    raise SIFError(f"{image.path}: no ext3 overlay partition (use --writable-tmpfs)")


def check_magic(image: Image, d: Descriptor) -> None:
    """The file-system magic at the partition's offset matches its declared type."""
    fs = d.partition()[0]
    if fs == FSType.SQUASHFS:
        ok = os.pread(image.fd, 4, d.offset) == SQUASHFS_MAGIC and d.size >= 96
    else:
        raw = os.pread(image.fd, 2, d.offset + 1024 + 56) if d.size >= 2048 else b""
        ok = len(raw) == 2 and struct.unpack("<H", raw)[0] == EXT_MAGIC
    if not ok:
        kind = "squashfs" if fs == FSType.SQUASHFS else "ext3"
        raise SIFError(f"{image.path}: object {d.id}: no {kind} file system at offset "
                       f"{d.offset}")


def fs_name(d: Descriptor) -> str:
    return "squashfs" if d.partition()[0] == FSType.SQUASHFS else "ext3"


# --- mounting ------------------------------------------------------------------------

@dataclass
class Layer:
    """A file system inside the image: a partition, or an OCI-SIF layer blob."""

    id: int
    offset: int
    size: int
    fs: str  # "squashfs" or "ext3"


def root_layers(image: Image) -> list[Layer]:
    """What makes the root file system, bottom layer first: a native image's root
    partition, or an OCI-SIF image's squashfs layers."""
    from ocirt.sif import ocisif

    if ocisif.is_oci_sif(image):
        layers = []
        for d in ocisif.squashfs_layers(image, ocisif.manifest(image)):
            if os.pread(image.fd, 4, d.offset) != SQUASHFS_MAGIC:
                raise SIFError(f"{image.path}: object {d.id}: no squashfs file system at "
                               f"offset {d.offset}")
            layers.append(Layer(d.id, d.offset, d.size, "squashfs"))
        return layers
    part = root_partition(image)
    return [Layer(part.id, part.offset, part.size, fs_name(part))]


def _as_layer(d: Descriptor) -> Layer:
    return Layer(d.id, d.offset, d.size, fs_name(d))


def mount_image(image_path: str, target: str, workdir: str, fuse: bool | None = None,
                writable: str | None = None, image: Image | None = None) -> MountRecord:
    """Mount the image's root file system on `target` (an existing directory).

    `fuse` None picks the kernel as root and squashfuse otherwise. `writable` is None
    (read-only), "overlay" (the image's ext3 overlay partition as upper layer) or "tmpfs".
    `workdir` (created if missing, removed by `release`) holds the layers of a stacked
    or writable root. `image`, when given, is the already open (and perhaps verified)
    file to mount from: the path is then not opened again. Returns the record `release`
    takes.
    """
    use_fuse = (not is_root()) if fuse is None else fuse
    record = MountRecord(target=target, writable=bool(writable))
    try:
        with _opened(image_path, image) as image:
            layers = root_layers(image)
            upper = None
            if writable == "overlay":
                upper = _as_layer(overlay_partition(image, _root_group(image)))
            if writable is None and len(layers) == 1:
                _mount_layer(image, layers[0], target, use_fuse, record)
            else:
                _mount_stack(image, layers, upper, writable, target, workdir, use_fuse,
                             record)
    except BaseException:
        release(record)
        raise
    return record


class _opened:  # noqa: N801 - a context manager, named like a function
    """The given open image (left open), or the path opened (and closed after)."""

    def __init__(self, path: str, image: Image | None) -> None:
        self.image = image or Image.open(os.path.abspath(path))
        self.owned = image is None

    def __enter__(self) -> Image:
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.image.close()


def _root_group(image: Image) -> int:
    primary = image.primary_partition()
    if primary is None:
        raise SIFError(f"{image.path}: no ext3 overlay partition (use --writable-tmpfs)")
    return primary.group_raw


def _mount_stack(image: Image, layers: list[Layer], upper: Layer | None,
                 writable: str | None, target: str, workdir: str, use_fuse: bool,
                 record: MountRecord) -> None:
    """Mount each layer below `workdir` and stack them (plus an upper layer for a
    writable session) with overlayfs on `target`."""
    _check_option_path(target)
    _check_option_path(workdir)
    _mkdir(workdir, record)
    lowers = []
    for i, layer in enumerate(layers):
        lower = os.path.join(workdir, f"lower{i}")
        _mkdir(lower, record)
        _mount_layer(image, layer, lower, use_fuse, record)
        lowers.append(lower)
    options = "lowerdir=" + ":".join(reversed(lowers))
    if writable is not None:
        options += _upper_layer(image, upper, workdir, record)
    if use_fuse or not is_root():
        _fuse_overlay(options, target, record)
    else:
        flags = _flags("nodev", "nosuid") | (0 if writable else _flags("ro"))
        _kernel_mount("overlay", target, "overlay", flags, options, record)


def _upper_layer(image: Image, upper: Layer | None, workdir: str,
                 record: MountRecord) -> str:
    layer = os.path.join(workdir, "upper-fs")
    _mkdir(layer, record)
    if upper is not None:
        if not is_root():
            raise MountError("the ext3 overlay partition needs root (a loop mount); "
                             "use --writable-tmpfs")
        _mount_layer(image, upper, layer, False, record, writable=True)
    elif is_root():
        _kernel_mount("tmpfs", layer, "tmpfs", _flags("nodev", "nosuid"), "mode=0755", record)
    else:
        # No tmpfs without privileges: a scratch directory, removed with the session.
        record.steps.append({"kind": "tree", "path": layer})
    for sub in ("upper", "work"):
        # Inside the layer: they go with the tmpfs, or stay in the ext3 partition.
        os.makedirs(os.path.join(layer, sub), mode=0o755, exist_ok=True)
    return f",upperdir={layer}/upper,workdir={layer}/work"


def _flags(*names: str) -> int:
    from ocirt.linux import consts as c

    table = {"ro": c.MS_RDONLY, "nodev": c.MS_NODEV, "nosuid": c.MS_NOSUID}
    value = 0
    for name in names:
        value |= table[name]
    return value


def _check_option_path(path: str) -> None:
    if any(ch in path for ch in ",:\\\n"):
        raise MountError(f"{path}: a path used in overlay options may not contain "
                         "',', ':', '\\' or a newline")


def _mkdir(path: str, record: MountRecord) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    except OSError as exc:
        raise MountError(f"mkdir {os_error_text(exc)}") from None
    record.steps.append({"kind": "dir", "path": path})


def _mount_layer(image: Image, layer: Layer, target: str, use_fuse: bool,
                 record: MountRecord, writable: bool = False) -> None:
    if use_fuse:
        if layer.fs != "squashfs":
            raise MountError(f"object {layer.id}: only squashfs can be mounted without root")
        _squashfuse(image, layer, target, record)
        return
    from ocirt.sif import loop

    backing = _reopen_rw(image) if writable else image.fd
    try:
        device, fd = loop.attach(backing, layer.offset, layer.size, read_only=not writable,
                                 name=image.path)
    finally:
        if writable:
            os.close(backing)
    try:
        flags = _flags("nodev", "nosuid") | (0 if writable else _flags("ro"))
        _kernel_mount(device, target, layer.fs, flags, None, record)
    except BaseException:
        loop.detach(fd)
        raise
    finally:
        os.close(fd)


def _reopen_rw(image: Image) -> int:
    """A read-write fd of the same open file, for a writable (ext3) loop device; the
    device keeps its own reference, so this one is closed once it is set up."""
    try:
        return os.open(f"/proc/self/fd/{image.fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise MountError(f"open {image.path} for writing: {os_error_text(exc)} (the "
                         "overlay partition is written to)") from None


def _kernel_mount(source: str, target: str, fstype: str, flags: int, data: str | None,
                  record: MountRecord) -> None:
    from ocirt.linux import libc

    try:
        libc.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise MountError(f"mount {fstype} on {target}: {os_error_text(exc)}") from None
    record.steps.append({"kind": "mount", "path": target})


def _run_daemon(argv: list[str], what: str, pass_fds: tuple[int, ...] = ()) -> None:
    """Run a FUSE daemon that forks into the background once its mount is up; its
    stdio goes to a file, not a pipe, so waiting for it never waits for the daemon."""
    with tempfile.TemporaryFile() as err:
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                 check=False, timeout=60, pass_fds=pass_fds)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MountError(f"{what}: {exc}") from None
        if res.returncode != 0:
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln]
            raise MountError(f"{what} failed: {lines[-1] if lines else res.returncode}")


def _squashfuse(image: Image, layer: Layer, target: str, record: MountRecord) -> None:
    """squashfuse serving the layer from our open file (handed over as /dev/fd/N), so
    it reads the very file that was opened (and verified), whatever the path is now."""
    binary = shutil.which("squashfuse") or shutil.which("squashfuse_ll")
    if binary is None:
        raise MountError("mounting without root needs squashfuse (apt install squashfuse)")
    options = f"offset={layer.offset}"
    if is_root():
        options += ",allow_other"
    _run_daemon([binary, "-o", options, f"/dev/fd/{image.fd}", target],
                f"squashfuse {target}", pass_fds=(image.fd,))
    record.steps.append({"kind": "fuse", "path": target})
    if not os.path.ismount(target):
        raise MountError(f"squashfuse {target}: no mount appeared")


def _fuse_overlay(options: str, target: str, record: MountRecord) -> None:
    binary = shutil.which("fuse-overlayfs")
    if binary is None:
        raise MountError("a writable session without root needs fuse-overlayfs "
                         "(apt install fuse-overlayfs)")
    if not is_root():
        options += f",squash_to_uid={os.geteuid()},squash_to_gid={os.getegid()}"
    _run_daemon([binary, "-o", options, target], f"fuse-overlayfs {target}")
    record.steps.append({"kind": "fuse", "path": target})


# --- undoing -------------------------------------------------------------------------

def release(record: MountRecord) -> None:
    """Undo the record's steps, newest first. Unmounts that fail because the mount is
    busy fall back to a lazy detach; the first other error is raised after every step
    has been tried."""
    first: Exception | None = None
    while record.steps:
        step = record.steps[-1]
        try:
            _undo(step)
        except OcirtError as exc:
            first = first or exc
        record.steps.pop()
    if first is not None:
        raise first


def _undo(step: dict[str, str]) -> None:
    kind, path = step.get("kind"), step["path"]
    if kind == "tree":
        remove_tree(path)
    elif kind == "dir":
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MountError(f"rmdir {os_error_text(exc)}") from None
    elif kind == "mount" or (kind == "fuse" and is_root()):
        _umount(path)
    elif kind == "fuse":
        _fusermount(path)
    else:
        raise MountError(f"mount record: unknown step {kind!r}")


def remove_tree(path: str) -> None:
    """Remove a scratch tree, never descending into a mount inside it."""
    real = os.path.realpath(path)
    if any(_is_mounted(p) for p in (real,)) or _mounts_below(real):
        raise MountError(f"{path}: something is still mounted there")

    def writable(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=writable)


def _mounts_below(real: str) -> bool:
    from ocirt.linux.mountinfo import unescape

    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(unescape(line.split()[4]).startswith(real + "/") for line in f)


def _umount(path: str) -> None:
    from ocirt.linux import consts as c
    from ocirt.linux import libc

    if not _is_mounted(path):
        return
    try:
        libc.umount(path, 0)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise MountError(f"umount {os_error_text(exc)}") from None
        try:
            libc.umount(path, c.MNT_DETACH)
        except OSError as exc2:
            raise MountError(f"umount {os_error_text(exc2)}") from None


def _fusermount(path: str) -> None:
    if not _is_mounted(path):
        return
    binary = shutil.which("fusermount3") or shutil.which("fusermount")
    if binary is None:
        raise MountError(f"cannot unmount {path}: fusermount not found")
    for argv in ([binary, "-u", path], [binary, "-u", "-z", path]):
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if res.returncode == 0:
            return
    raise MountError(f"fusermount -u {path}: {res.stderr.decode(errors='replace').strip()}")


def _is_mounted(path: str) -> bool:
    """Whether `path` is a mount point in our mount namespace (by mountinfo, which
    works for FUSE mounts we could not stat)."""
    from ocirt.linux.mountinfo import unescape

    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and unescape(fields[4]) == real:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False
