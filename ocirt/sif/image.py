"""Loading, creating and modifying SIF files.

`Image.open` reads the header and the descriptor table and checks every offset against
the file size before anything is read, so a truncated or malformed file gives one clear
error (never an out-of-bounds read or a traceback). The writers lay files out exactly as
the reference does: header zero-padded up to the table, objects appended in slot order,
partitions aligned to 4096, the gap counted in the next object's size-with-padding, and
the header's data size grown by each object's padded size.
"""

from __future__ import annotations

import hashlib
import os
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ocirt.errors import OcirtError
from ocirt.sif import format as fmt
from ocirt.sif.format import DataType, Descriptor, Header, PartType

_CHUNK = 1 << 20
_MAX_DESCRIPTORS = 1 << 20


class SIFError(OcirtError):
    """A SIF file is unreadable or an operation on it is not possible; one line."""


def now() -> int:
    return int(_time.time())


@dataclass
class ObjectInput:
    """A data object to add: its bytes (`data`) or a file to copy (`path`), and what the
    descriptor says about it. `group` 0 means "in no group"; `link` is an object ID and
    `link_group` a group number (at most one of them)."""

    data_type: int
    data: bytes | None = None
    path: str | None = None
    name: str = ""
    group: int = fmt.DEFAULT_GROUP
    link: int = 0
    link_group: int = 0
    alignment: int | None = None
    extra: bytes = field(default=b"\0" * fmt.EXTRA_SIZE)
    time: int | None = None

    def stored_group(self) -> int:
        return (self.group | fmt.GROUP_MASK) & 0xFFFFFFFF

    def stored_link(self) -> int:
        if self.link and self.link_group:
            raise SIFError("an object links either to an object or to a group, not both")
        if self.link_group:
            return (self.link_group | fmt.GROUP_MASK) & 0xFFFFFFFF
        return self.link

    def effective_alignment(self) -> int:
        if self.alignment is not None:
            return self.alignment
        return fmt.PARTITION_ALIGNMENT if self.data_type == DataType.PARTITION else 0

    def partition_type(self) -> int | None:
        if self.data_type != DataType.PARTITION:
            return None
        return fmt.Descriptor(extra=self.extra).partition()[1]


def partition_input(path: str, fs: int = fmt.FSType.SQUASHFS, part: int = PartType.PRIMSYS,
                    arch: str | None = None, **kw: object) -> ObjectInput:
    """A partition object from a file-system image at `path`."""
    try:
        extra = fmt.partition_extra(fs, part, arch or fmt.host_arch())
    except ValueError as exc:
        raise SIFError(f"partition: {exc}") from None
    return ObjectInput(DataType.PARTITION, path=path, extra=extra, **kw)  # type: ignore[arg-type]


def next_aligned(offset: int, alignment: int) -> int:
    if alignment and offset % alignment:
        return offset - offset % alignment + alignment
    return offset


class Image:
    """An open SIF file. Use `Image.open(path)`; as a context manager it closes itself."""

    def __init__(self, fd: int, path: str, writable: bool) -> None:
        self.fd = fd
        self.path = path
        self.writable = writable
        self.header = Header()
        self.slots: list[Descriptor] = []
        self.file_size = 0

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, writable: bool = False) -> Image:
        from ocirt.linux.files import open_regular

        try:
            fd = open_regular(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            from ocirt.errors import os_error_text

            raise SIFError(f"open {os_error_text(exc)}") from None
        image = cls(fd, path, writable)
        try:
            if writable:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            image._load()
        except BaseException:
            os.close(fd)
            raise
        return image

    def _load(self) -> None:
        st = os.fstat(self.fd)
        import stat

        if not stat.S_ISREG(st.st_mode):
            raise SIFError(f"{self.path}: not a regular file")
        self.file_size = st.st_size
        raw = os.pread(self.fd, fmt.HEADER_SIZE, 0)
        if len(raw) < fmt.HEADER_SIZE:
            raise SIFError(f"{self.path}: not a SIF file (only {len(raw)} bytes, a header "
                           f"needs {fmt.HEADER_SIZE})")
        h = Header.unpack(raw)
        if h.magic != fmt.MAGIC:
            raise SIFError(f"{self.path}: not a SIF file (no SIF_MAGIC in the header)")
        if h.version != fmt.VERSION:
            raise SIFError(f"{self.path}: unsupported SIF version {h.version!r}")
        self._check_table(h)
        self.header = h
        self.slots = self._read_table(h)

    def _check_table(self, h: Header) -> None:
        table = h.descriptors_total * fmt.DESCRIPTOR_SIZE
        problem = ""
        if not 0 <= h.descriptors_total <= _MAX_DESCRIPTORS:
            problem = f"descriptor count {h.descriptors_total} out of range"
        elif not 0 <= h.descriptors_free <= h.descriptors_total:
            problem = (f"free descriptor count {h.descriptors_free} out of range "
                       f"(total {h.descriptors_total})")
        elif h.descriptors_offset < fmt.HEADER_SIZE:
            problem = f"descriptor table offset {h.descriptors_offset} inside the header"
        elif h.descriptors_size < table:
            problem = (f"descriptor table size {h.descriptors_size} too small for "
                       f"{h.descriptors_total} descriptors")
        elif h.descriptors_offset + table > self.file_size:
            problem = (f"descriptor table (offset {h.descriptors_offset}, {table} bytes) "
                       f"extends past the end of the file ({self.file_size} bytes): "
                       "truncated image?")
        elif h.data_offset < 0 or h.data_size < 0:
            problem = "negative data offset or size"
        if problem:
            raise SIFError(f"{self.path}: {problem}")

    def _read_table(self, h: Header) -> list[Descriptor]:
        size = h.descriptors_total * fmt.DESCRIPTOR_SIZE
        raw = os.pread(self.fd, size, h.descriptors_offset) if size else b""
        if len(raw) < size:
            raise SIFError(f"{self.path}: short read of the descriptor table: truncated image?")
        slots = []
        seen: set[int] = set()
        for i in range(h.descriptors_total):
            d = Descriptor.unpack(raw[i * fmt.DESCRIPTOR_SIZE:(i + 1) * fmt.DESCRIPTOR_SIZE], i)
            if d.used:
                self._check_descriptor(d, seen)
            slots.append(d)
        return slots

    def _check_descriptor(self, d: Descriptor, seen: set[int]) -> None:
        where = f"{self.path}: descriptor {d.slot + 1}"
        if d.id == 0 or d.id in seen:
            raise SIFError(f"{where}: invalid or duplicate object ID {d.id}")
        seen.add(d.id)
        if d.offset < 0 or d.size < 0:
            raise SIFError(f"{where}: negative offset or size")
        if d.offset + d.size > self.file_size:
            raise SIFError(f"{where}: object {d.id} (offset {d.offset}, {d.size} bytes) "
                           f"extends past the end of the file ({self.file_size} bytes): "
                           "truncated image?")

    # --- reading ------------------------------------------------------------------------

    def objects(self) -> list[Descriptor]:
        """Used descriptors in slot order (the order of every listing and signature)."""
        return [d for d in self.slots if d.used]

    def get(self, object_id: int) -> Descriptor:
        for d in self.slots:
            if d.used and d.id == object_id:
                return d
        raise SIFError(f"{self.path}: object {object_id} not found")

    def read(self, d: Descriptor) -> bytes:
        return b"".join(self.chunks(d))

    def chunks(self, d: Descriptor, chunk: int = _CHUNK) -> Iterator[bytes]:
        pos, end = d.offset, d.offset + d.size
        while pos < end:
            data = os.pread(self.fd, min(chunk, end - pos), pos)
            if not data:
                raise SIFError(f"{self.path}: object {d.id}: unexpected end of file")
            pos += len(data)
            yield data

    def group_ids(self) -> list[int]:
        """Group numbers present in the image, sorted."""
        return sorted({d.group for d in self.objects() if d.group})

    def group_objects(self, group: int) -> list[Descriptor]:
        return [d for d in self.objects() if d.group == group]

    def min_id(self, group_raw: int) -> int:
        """Smallest ID among used descriptors with this stored group value."""
        ids = [d.id for d in self.objects() if d.group_raw == group_raw]
        return min(ids) if ids else 0

    def relative_id(self, d: Descriptor) -> int:
        return d.id - self.min_id(d.group_raw)

    def primary_partition(self) -> Descriptor | None:
        for d in self.objects():
            if d.data_type == DataType.PARTITION and d.partition()[1] == PartType.PRIMSYS:
                return d
        return None

    def find(self, data_type: int, name: str | None = None) -> list[Descriptor]:
        return [d for d in self.objects()
                if d.data_type == data_type and (name is None or d.name == name)]

    # --- writing ------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise SIFError(f"{self.path}: image opened read-only")

    @property
    def deterministic(self) -> bool:
        """Nil UUID and zero times (made with --deterministic): the reference (2.11.1+) keeps
        such an image reproducible by stamping later edits with the zero time too."""
        h = self.header
        return h.id == b"\0" * 16 and h.created == fmt.ZERO_TIME and \
            h.modified == fmt.ZERO_TIME

    def _when(self, when: int | None) -> int:
        if when is not None:
            return when
        return fmt.ZERO_TIME if self.deterministic else now()

    def add(self, obj: ObjectInput, when: int | None = None) -> Descriptor:
        """Append one data object into the first free slot; on failure the file is as it
        was."""
        self._require_writable()
        when = self._when(when)
        slot = next((d.slot for d in self.slots if not d.used), None)
        if slot is None:
            raise SIFError(f"{self.path}: insufficient descriptor capacity to add data "
                           "object(s) to image")
        saved = (Header(**_fields(self.header)), self.file_size)
        try:
            d = self._write_object(slot, obj, when)
            self._write_table()
            self.header.modified = when
            self._write_header()
        except BaseException:
            self.header, size = saved
            self.slots[slot] = Descriptor(slot=slot)
            _quiet_truncate(self.fd, size)
            self.file_size = size
            raise
        return d

    def _write_object(self, slot: int, obj: ObjectInput, when: int) -> Descriptor:
        if obj.partition_type() == PartType.PRIMSYS:
            if self.primary_partition() is not None:
                raise SIFError(f"{self.path}: image already contains a primary partition")
            self.header.arch = obj.extra[8:11]
        start = self.header.data_offset + self.header.data_size
        offset = next_aligned(start, obj.effective_alignment())
        size, digest = self._copy_in(obj, offset)
        extra = obj.extra
        if obj.data_type in (DataType.OCI_ROOT_INDEX, DataType.OCI_BLOB):
            extra = fmt.digest_extra("sha256:" + digest)
        t = obj.time if obj.time is not None else when
        try:
            name = fmt.pad(obj.name.encode(), fmt.NAME_SIZE, "object name")
            extra = fmt.pad(extra, fmt.EXTRA_SIZE, "extra")
        except ValueError as exc:
            raise SIFError(str(exc)) from None
        d = Descriptor(obj.data_type, 1, slot + 1, obj.stored_group(), obj.stored_link(),
                       offset, size, offset - start + size, t, t, 0, 0, name, extra, slot)
        self.slots[slot] = d
        self.header.descriptors_free -= 1
        self.header.data_size += d.size_with_padding
        self.file_size = max(self.file_size, offset + size)
        return d

    def _copy_in(self, obj: ObjectInput, offset: int) -> tuple[int, str]:
        """Write the object's bytes at `offset`; returns (size, sha256 hex)."""
        digest = hashlib.sha256()
        if obj.data is not None:
            _pwrite_all(self.fd, obj.data, offset)
            digest.update(obj.data)
            return len(obj.data), digest.hexdigest()
        if obj.path is None:
            raise SIFError("object has neither data nor a file")
        want_digest = obj.data_type in (DataType.OCI_ROOT_INDEX, DataType.OCI_BLOB)
        from ocirt.linux.files import open_regular

        try:
            src = open_regular(obj.path)
        except OSError as exc:
            from ocirt.errors import os_error_text

            raise SIFError(f"open {os_error_text(exc)}") from None
        try:
            return _copy_file(src, self.fd, offset, digest if want_digest else None)
        finally:
            os.close(src)

    def _write_table(self) -> None:
        raw = b"".join(d.pack() for d in self.slots)
        _pwrite_all(self.fd, raw, self.header.descriptors_offset)

    def _write_header(self) -> None:
        _pwrite_all(self.fd, self.header.pack(), 0)

    def delete(self, object_id: int, zero: bool = False, compact: bool = False,
               when: int | None = None) -> None:
        """Free an object's slot; `zero` overwrites its data, `compact` truncates the file
        when it is the last object (as the reference, compacting others is refused)."""
        self._require_writable()
        d = self.get(object_id)
        if compact and any(o.offset + o.size > d.offset + d.size for o in self.objects()):
            raise SIFError(f"{self.path}: compact not implemented for non-last object")
        if zero:
            _zero_range(self.fd, d.offset, d.size)
        if compact:
            os.ftruncate(self.fd, d.offset + d.size - d.size_with_padding)
            self.file_size = d.offset + d.size - d.size_with_padding
            self.header.data_size -= d.size_with_padding
        if d.data_type == DataType.PARTITION and d.partition()[1] == PartType.PRIMSYS:
            self.header.arch = fmt.ARCH_UNKNOWN
        self.header.descriptors_free += 1
        self.header.modified = self._when(when)
        self.slots[d.slot] = Descriptor(slot=d.slot)
        self._write_table()
        self._write_header()

    def set_primary(self, object_id: int, when: int | None = None) -> None:
        """Make a system partition the primary one (the previous primary becomes a plain
        system partition); the header arch follows the new primary, and both descriptors
        and the header get the modification time (the reference since 2.11; signatures do
        not cover it)."""
        self._require_writable()
        d = self.get(object_id)
        if d.data_type != DataType.PARTITION:
            raise SIFError(f"{self.path}: object {object_id}: data object not a partition")
        fs, part, arch = d.partition()
        if part == PartType.PRIMSYS:
            return
        if part != PartType.SYSTEM:
            raise SIFError(f"{self.path}: object {object_id}: data object not a system "
                           "partition")
        when = self._when(when)
        old = self.primary_partition()
        if old is not None:
            ofs, _, oarch = old.partition()
            old.extra = _partition_extra(ofs, PartType.SYSTEM, oarch)
            old.modified = when
        d.extra = _partition_extra(fs, PartType.PRIMSYS, arch)
        d.modified = when
        self.header.arch = d.extra[8:11]
        self.header.modified = when
        self._write_table()
        self._write_header()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _partition_extra(fs: int, part: int, arch: str) -> bytes:
    """Partition metadata as the reference rewrites it (unknown arch stored as "00")."""
    if arch not in fmt.ARCH_CODES:
        import struct

        return fmt.pad(struct.pack("<ii", fs, part) + fmt.ARCH_UNKNOWN, fmt.EXTRA_SIZE, "extra")
    return fmt.partition_extra(fs, part, arch)


def _fields(h: Header) -> dict:
    return dict(h.__dict__)


def create(path: str, objects: list[ObjectInput] | tuple[ObjectInput, ...] = (), *,
           launch_script: str = "", image_id: bytes | None = None, when: int | None = None,
           capacity: int = fmt.DEFAULT_CAPACITY, deterministic: bool = False) -> None:
    """Write a new SIF file at `path` (mode 0755) holding `objects` in slot order.

    Written next to `path` and renamed into place, so a failure leaves no partial file.
    `deterministic` gives the nil UUID and the zero time, as OptCreateDeterministic.
    """
    script = launch_script.encode()
    if len(script) >= fmt.LAUNCH_SCRIPT_SIZE:
        raise SIFError("launch script too large")
    if len(objects) > capacity:
        raise SIFError("insufficient descriptor capacity to add data object(s) to image")
    if deterministic:
        image_id, when = b"\0" * 16, fmt.ZERO_TIME
    if image_id is None:
        import uuid

        image_id = uuid.uuid4().bytes
    when = now() if when is None else when
    table = capacity * fmt.DESCRIPTOR_SIZE
    header = Header(
        launch_script=fmt.pad(script, fmt.LAUNCH_SCRIPT_SIZE, "launch script"),
        id=image_id, created=when, modified=when, descriptors_free=capacity,
        descriptors_total=capacity, descriptors_offset=fmt.DEFAULT_DESCRIPTORS_OFFSET,
        descriptors_size=table, data_offset=fmt.DEFAULT_DESCRIPTORS_OFFSET + table)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o755)
    except OSError as exc:
        from ocirt.errors import os_error_text

        raise SIFError(f"create {os_error_text(exc)}") from None
    image = Image(fd, path, True)
    image.header = header
    image.slots = [Descriptor(slot=i) for i in range(capacity)]
    try:
        for i, obj in enumerate(objects):
            image._write_object(i, obj, when)
        image._write_table()
        image._write_header()
        os.ftruncate(fd, max(image.file_size, header.data_offset))
        os.fchmod(fd, 0o755 & ~_umask())
        os.rename(tmp, path)
    except BaseException:
        _quiet_unlink(tmp)
        raise
    finally:
        image.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _copy_file(src: int, dst: int, offset: int, digest: hashlib._Hash | None) -> tuple[int, str]:
    """Copy all of `src` to `dst` at `offset`; in-kernel when no digest is wanted."""
    total = 0
    if digest is None:
        try:
            while True:
                n = os.copy_file_range(src, dst, 1 << 30, None, offset + total)
                if n == 0:
                    return total, ""
                total += n
        except OSError:
            pass  # not supported here: fall back to read/write from where it stopped
    while True:
        data = os.pread(src, _CHUNK, total)
        if not data:
            return total, (digest.hexdigest() if digest else "")
        if digest is not None:
            digest.update(data)
        _pwrite_all(dst, data, offset + total)
        total += len(data)


def _zero_range(fd: int, offset: int, size: int) -> None:
    zeros = b"\0" * min(size, _CHUNK)
    pos, end = offset, offset + size
    while pos < end:
        n = min(len(zeros), end - pos)
        _pwrite_all(fd, zeros[:n], pos)
        pos += n


def _quiet_truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def _quiet_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
