"""Reading an OCI image layout (what `skopeo copy ... oci:DIR` and umoci write) and
applying its layers to a directory.

Blobs are checked against their digests and sizes as they are read. Layers are applied
in order with the OCI whiteout rules (`.wh.NAME` removes NAME from lower layers,
`.wh..wh..opq` empties a directory of lower-layer entries). A layer is untrusted input:
every entry is created through a directory fd obtained with openat2(RESOLVE_IN_ROOT),
so neither `..`, an absolute path, nor a symlink planted by an earlier entry can make
it write outside the target directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import tarfile
from typing import IO, Any

from ocirt import jsonio
from ocirt.sif.image import SIFError

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class LayoutError(SIFError):
    """The OCI layout is unreadable, inconsistent, or uses something unsupported."""


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        layout = self._json_file("oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise LayoutError(f"{path}: not an OCI image layout (no oci-layout file)")

    def _json_file(self, name: str) -> Any:
        from ocirt.linux.files import read_regular

        full = os.path.join(self.path, name)
        try:
            return jsonio.loads(read_regular(full))
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: not an OCI image layout (no {name})") from None
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{full}: {exc}") from None

    def blob_path(self, desc: dict[str, Any]) -> str:
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or ":" not in digest:
            raise LayoutError(f"{self.path}: descriptor without a valid digest")
        algorithm, hexval = digest.split(":", 1)
        if algorithm not in ("sha256", "sha512") or not hexval.isalnum():
            raise LayoutError(f"{self.path}: unsupported digest {digest!r}")
        return os.path.join(self.path, "blobs", algorithm, hexval)

    def open_blob(self, desc: dict[str, Any]) -> _VerifiedReader:
        path = self.blob_path(desc)
        from ocirt.linux.files import open_regular

        try:
            f = os.fdopen(open_regular(path), "rb")
        except OSError as exc:
            raise LayoutError(f"blob {desc.get('digest')}: {exc.strerror or exc}") from None
        return _VerifiedReader(f, desc)

    def read_json_blob(self, desc: dict[str, Any]) -> Any:
        if not isinstance(desc.get("size"), int) or desc["size"] > 16 << 20:
            raise LayoutError(f"blob {desc.get('digest')}: missing or too large size")
        with self.open_blob(desc) as r:
            data = r.read()
            r.finish()
        try:
            doc = jsonio.loads(data)
            jsonio.check_tree(doc)
        except jsonio.JSONContentError as exc:
            raise LayoutError(f"blob {desc.get('digest')}: {exc.path_text or 'JSON'}: "
                              f"{exc.problem}") from None
        except ValueError as exc:
            raise LayoutError(f"blob {desc.get('digest')}: {exc}") from None
        if not isinstance(doc, dict):
            raise LayoutError(f"blob {desc.get('digest')}: not a JSON object")
        return doc

    def manifest(self, ref: str | None, arch: str) -> dict[str, Any]:
        """The image manifest named by `ref` (or the only one), descending into image
        indexes by platform (linux/`arch`)."""
        index = self._json_file("index.json")
        candidates = _manifests(index)
        if ref is not None:
            candidates = [m for m in candidates
                          if (m.get("annotations") or {}).get(REF_ANNOTATION) == ref]
            if not candidates:
                raise LayoutError(f"{self.path}: no image named {ref!r}")
        if len(candidates) != 1:
            names = sorted(str((m.get("annotations") or {}).get(REF_ANNOTATION, "?"))
                           for m in candidates)
            raise LayoutError(f"{self.path}: {len(candidates)} images; choose one with "
                              f"DIR:REF (refs: {', '.join(names) or 'none'})")
        return self._resolve(candidates[0], arch, depth=0)

    def _resolve(self, desc: dict[str, Any], arch: str, depth: int) -> dict[str, Any]:
        if depth > 4:
            raise LayoutError(f"{self.path}: image indexes nested too deeply")
        doc = self.read_json_blob(desc)
        kind = doc.get("mediaType") or desc.get("mediaType")
        if kind in (INDEX, DOCKER_LIST) or "manifests" in doc:
            chosen = [m for m in _manifests(doc)
                      if (m.get("platform") or {}).get("architecture") == arch
                      and (m.get("platform") or {}).get("os", "linux") == "linux"]
            if not chosen:
                raise LayoutError(f"{self.path}: no image for linux/{arch} in the index")
            return self._resolve(chosen[0], arch, depth + 1)
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise LayoutError(f"{self.path}: manifest {desc.get('digest')} has no config "
                              "or layers")
        return doc


def _manifests(index: Any) -> list[dict[str, Any]]:
    items = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(items, list):
        raise LayoutError("image index without a manifests list")
    return [m for m in items if isinstance(m, dict)]


class _VerifiedReader:
    """A blob file that checks its size and digest once read to the end."""

    def __init__(self, f: IO[bytes], desc: dict[str, Any]) -> None:
        self.f = f
        self.desc = desc
        algorithm = str(desc["digest"]).split(":", 1)[0]
        self.hash = hashlib.new(algorithm)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def finish(self) -> None:
        """Read what is left and check size and digest."""
        while self.read(1 << 20):
            pass
        size = self.desc.get("size")
        if isinstance(size, int) and size != self.count:
            raise LayoutError(f"blob {self.desc['digest']}: size {self.count}, manifest "
                              f"says {size}")
        if f"{self.hash.name}:{self.hash.hexdigest()}" != self.desc["digest"]:
            raise LayoutError(f"blob {self.desc['digest']}: content does not match its "
                              "digest")

    def __enter__(self) -> _VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


# --- applying layers -----------------------------------------------------------------

def apply_layers(layout: Layout, manifest: dict[str, Any], dest: str) -> None:
    """Apply every layer of `manifest` in order onto the directory `dest`."""
    for desc in manifest["layers"]:
        if not isinstance(desc, dict):
            raise LayoutError("malformed layer descriptor")
        with layout.open_blob(desc) as raw:
            stream, proc = _decompressed(raw, str(desc.get("mediaType", "")))
            try:
                apply_tar(stream, dest)
            finally:
                if proc is not None:
                    proc.stdout.close()  # type: ignore[union-attr]
                    proc.wait()
            if proc is not None and proc.returncode != 0:
                raise LayoutError(f"layer {desc['digest']}: zstd failed")
            raw.finish()


def _decompressed(raw: _VerifiedReader, media_type: str) -> tuple[Any, Any]:
    """A readable stream of the layer's tar, and the decompressor process if any."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        import shutil
        import threading

        binary = shutil.which("zstd")
        if binary is None:
            raise LayoutError("zstd-compressed layers need zstd (apt install zstd)")
        proc = subprocess.Popen([binary, "-d", "-c", "-q"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)

        def feed() -> None:
            try:
                while chunk := raw.read(1 << 20):
                    proc.stdin.write(chunk)  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass
            finally:
                try:
                    proc.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass

        threading.Thread(target=feed, daemon=True).start()
        return proc.stdout, proc
    if "gzip" in media_type or media_type.endswith("tar") or media_type == "":
        head = raw.read(2)
        stream = _Prefixed(head, raw)
        if head == b"\x1f\x8b":
            import gzip

            # GzipFile reads every member: umoci and pigz write several.
            return gzip.GzipFile(fileobj=stream, mode="rb"), None
        return stream, None
    raise LayoutError(f"unsupported layer media type {media_type}")


class _EndPadded:
    """A tar stream completed with the zero padding and end-of-archive blocks that some
    writers leave out (umoci ends a layer right after the last file's data), as
    containerd's and Go's readers tolerate."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.count = 0
        self.padding: int | None = None

    def read(self, n: int = -1) -> bytes:
        if self.padding is None:
            data = self.stream.read(n)
            if data or n == 0:
                self.count += len(data)
                return data
            self.padding = (-self.count % 512) + 1024
        give = self.padding if n < 0 else min(n, self.padding)
        self.padding -= give
        return b"\0" * give


class _Prefixed:
    """A stream with a few already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data + (self.rest.read(n - len(data)) if n > len(data) else b"")
        return self.rest.read(n)


def apply_tar(stream: Any, dest: str) -> None:
    """Apply one layer tar stream onto `dest`, with whiteouts."""
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    created: set[str] = set()
    try:
        with tarfile.open(fileobj=_EndPadded(stream), mode="r|") as tar:
            for member in tar:
                _apply_member(root, tar, member, created)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, LayoutError):
            raise
        raise LayoutError(f"layer: {exc}") from None
    finally:
        os.close(root)


def _clean(name: str) -> list[str] | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return parts


def _apply_member(root: int, tar: tarfile.TarFile, m: tarfile.TarInfo,
                  created: set[str]) -> None:
    parts = _clean(m.name)
    if not parts:
        if parts is None:
            raise LayoutError(f"layer entry {m.name!r} leaves the root")
        return  # the root directory itself
    parent_parts, base = parts[:-1], parts[-1]
    path = "/".join(parts)
    parent = _open_dir(root, parent_parts, create=True)
    try:
        if base == OPAQUE:
            _opaque(parent, "/".join(parent_parts), created)
        elif base.startswith(WHITEOUT):
            victim = base[len(WHITEOUT):]
            if victim not in ("", ".", "..") and \
                    "/".join([*parent_parts, victim]) not in created:
                _remove(parent, victim)
        else:
            _create(root, parent, base, tar, m)
            created.add(path)
    finally:
        os.close(parent)


def _open_dir(root: int, parts: list[str], create: bool) -> int:
    """An fd of the directory `parts` below root, resolved inside root; missing
    directories are created (0755)."""
    from ocirt.fs.resolve import open_in_root

    fd = os.dup(root)
    for i, part in enumerate(parts):
        try:
            nxt = open_in_root(root, "/".join(parts[: i + 1]),
                               os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if not create or exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                os.close(fd)
                raise LayoutError(f"layer: {'/'.join(parts[: i + 1])}: {exc.strerror}") \
                    from None
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                _remove(fd, part)  # a non-directory where a directory must go
                os.mkdir(part, 0o755, dir_fd=fd)
            nxt = open_in_root(root, "/".join(parts[: i + 1]), os.O_RDONLY | os.O_DIRECTORY)
        os.close(fd)
        fd = nxt
    return fd


def _remove(parent: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)
        try:
            for entry in os.listdir(fd):
                _remove(fd, entry)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _opaque(parent: int, dir_path: str, created: set[str]) -> None:
    prefix = f"{dir_path}/" if dir_path else ""
    for entry in os.listdir(parent):
        if prefix + entry not in created:
            _remove(parent, entry)


def _create(root: int, parent: int, name: str, tar: tarfile.TarFile,
            m: tarfile.TarInfo) -> None:
    try:
        existing = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        _remove(parent, name)
    privileged = os.geteuid() == 0
    if m.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(name, 0o700, dir_fd=parent)
    elif m.isreg():
        _write_file(parent, name, tar, m)
    elif m.issym():
        os.symlink(m.linkname, name, dir_fd=parent)
    elif m.islnk():
        _hardlink(root, parent, name, m.linkname)
        return  # a hard link shares the target's attributes
    elif m.ischr() or m.isblk() or m.isfifo():
        if not (privileged or m.isfifo()):
            return  # device nodes need root; an unprivileged build leaves them out
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
    else:
        return
    _set_attributes(parent, name, m, privileged)


def _write_file(parent: int, name: str, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=parent)
    with os.fdopen(fd, "wb") as out:
        src = tar.extractfile(m)
        if src is not None:
            while chunk := src.read(1 << 20):
                out.write(chunk)


def _hardlink(root: int, parent: int, name: str, target: str) -> None:
    parts = _clean(target)
    if not parts:
        raise LayoutError(f"layer: hard link {name!r} -> {target!r} leaves the root")
    src_dir = _open_dir(root, parts[:-1], create=False)
    try:
        os.link(parts[-1], name, src_dir_fd=src_dir, dst_dir_fd=parent,
                follow_symlinks=False)
    except OSError as exc:
        raise LayoutError(f"layer: hard link {name!r} -> {target!r}: {exc.strerror}") \
            from None
    finally:
        os.close(src_dir)


def _set_attributes(parent: int, name: str, m: tarfile.TarInfo, privileged: bool) -> None:
    if privileged:
        os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        for key, value in (m.pax_headers or {}).items():
            if key.startswith("SCHILY.xattr.") and not m.issym():
                try:
                    os.setxattr(f"/proc/self/fd/{parent}/{name}", key[13:],
                                value.encode("utf-8", "surrogateescape"))
                except OSError:
                    pass
    if not m.issym():
        mode = m.mode & 0o7777
        if m.isdir() and not privileged:
            mode |= 0o700  # later layers must still be able to write into it
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
    os.utime(name, (m.mtime, m.mtime), dir_fd=parent, follow_symlinks=False)
