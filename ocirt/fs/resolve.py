"""Path resolution confined to the container's root filesystem.

Every path from config.json or from the image (mount destinations, device nodes, masked
paths, the console) is resolved *inside* the rootfs: a symlink in the image, absolute or
relative, dangling or racing, must never make ocirt touch a host path. The kernel does
this for us with openat2(RESOLVE_IN_ROOT); on kernels without openat2 a component-by-
component walk on O_PATH|O_NOFOLLOW file descriptors does the same. Callers get file
descriptors, never path strings, and mount through `/proc/self/fd/N` (`fd_path`).
Every kernel call goes through ocirt.linux.syscalls, so tests can run this logic on a
recording fake, with symlinks swapped in between any check and its use.
"""

from __future__ import annotations

import errno
import os
import stat

from ocirt.linux import consts as c
from ocirt.linux import syscalls

_O_PATH = getattr(os, "O_PATH", c.O_PATH)
MAX_SYMLINKS = 40

_openat2_works: bool | None = None


def fd_path(fd: int) -> str:
    """The magic link through which a syscall taking a path acts on `fd` itself."""
    return f"/proc/self/fd/{fd}"


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_in_root(root_fd: int, path: str, flags: int = _O_PATH, mode: int = 0) -> int:
    """Open `path` as if `root_fd` were `/`: symlinks and `..` cannot leave the root."""
    global _openat2_works
    flags |= os.O_CLOEXEC
    if _openat2_works is not False:
        try:
            fd = syscalls.current().openat2(root_fd, path.lstrip("/") or ".", flags, mode,
                                            c.RESOLVE_IN_ROOT | c.RESOLVE_NO_MAGICLINKS)
            _openat2_works = True
            return fd
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise _path_error(exc.errno or errno.EIO, path) from None
            _openat2_works = False  # no openat2 (old kernel, or a seccomp filter)
    return _walk_open(root_fd, path, flags, mode)


def _path_error(err: int, path: str) -> OSError:
    from ocirt.errors import errno_text

    exc = OSError(err, errno_text(err))
    exc.filename = path
    return exc


def _walk_open(root_fd: int, path: str, flags: int, mode: int) -> int:
    """The fallback resolver: one component at a time, each opened O_PATH|O_NOFOLLOW
    relative to the previous one, symlinks expanded against the root."""
    sc = syscalls.current()
    pending = components(path)
    cur = sc.dup(root_fd)
    stack: list[int] = []  # fds of the directories above `cur`, for ".."
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if stack:
                    sc.close(cur)
                    cur = stack.pop()
                continue
            try:
                nxt = sc.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except OSError as exc:
                raise _path_error(exc.errno or errno.EIO, path) from None
            st = sc.fstat(nxt)
            if stat.S_ISLNK(st.st_mode) and (pending or not flags & os.O_NOFOLLOW):
                # Read through the fd we hold (readlinkat with an empty name), not the
                # name: the name may have been swapped meanwhile.
                target = sc.readlink("", dir_fd=nxt)
                sc.close(nxt)
                links += 1
                if links > MAX_SYMLINKS:
                    raise _path_error(errno.ELOOP, path)
                if target.startswith("/"):
                    for fd in stack:
                        sc.close(fd)
                    stack.clear()
                    sc.close(cur)
                    cur = sc.dup(root_fd)
                pending = components(target) + pending
                continue
            if pending and not stat.S_ISDIR(st.st_mode):
                sc.close(nxt)
                raise _path_error(errno.ENOTDIR, path)
            stack.append(cur)
            cur = nxt
        if flags & ~(os.O_CLOEXEC | os.O_NOFOLLOW) == _O_PATH:
            result, cur = cur, -1
            return result
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(sc.fstat(cur).st_mode):
            raise _path_error(errno.ENOTDIR, path)
        return sc.open(fd_path(cur), flags & ~os.O_NOFOLLOW, mode)
    finally:
        for fd in stack:
            sc.close(fd)
        if cur >= 0:
            sc.close(cur)


def mkdir_all(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create `path` (and its parents) inside the root; return an O_PATH fd of it.

    A dangling symlink on the way is followed *inside* the root and its target created
    there (an image's `/etc/new -> /nonexistent` must not create anything on the host).
    """
    for _ in range(MAX_SYMLINKS):
        try:
            return open_in_root(root_fd, path, _O_PATH | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        path = _create_first_missing(root_fd, path, mode)
    raise _path_error(errno.ELOOP, path)


def _create_first_missing(root_fd: int, path: str, mode: int) -> str:
    """mkdir the first missing component of `path`; return the path to try next (which
    differs from `path` when that component was a dangling symlink)."""
    sc = syscalls.current()
    parts = components(path)
    parent = sc.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            try:
                fd = open_in_root(root_fd, "/".join(parts[: i + 1]), _O_PATH | os.O_DIRECTORY)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            else:
                sc.close(parent)
                parent = fd
                continue
            if name == "..":
                raise _path_error(errno.ENOENT, path)
            try:
                sc.mkdir(name, mode, dir_fd=parent)
                return path
            except FileExistsError:
                pass
            st = sc.lstat(name, dir_fd=parent)
            if not stat.S_ISLNK(st.st_mode):
                raise _path_error(errno.ENOTDIR, "/" + "/".join(parts[: i + 1]))
            target = sc.readlink(name, dir_fd=parent)
            base = "" if target.startswith("/") else "/".join(parts[:i])
            return "/".join(filter(None, (base, target.lstrip("/"), *parts[i + 1 :])))
        return path
    finally:
        sc.close(parent)


def create_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """Make sure a regular file (or any non-directory) exists at `path` inside the root,
    creating parents as needed; return an O_PATH fd of it."""
    sc = syscalls.current()
    for _ in range(MAX_SYMLINKS):
        try:
            fd = open_in_root(root_fd, path, _O_PATH)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            return fd
        parent_path, _, name = path.rstrip("/").rpartition("/")
        parent = mkdir_all(root_fd, parent_path or "/")
        try:
            try:
                new = sc.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, mode, dir_fd=parent)
                sc.close(new)
                continue
            except FileExistsError:
                pass
            st = sc.lstat(name, dir_fd=parent)
            if not stat.S_ISLNK(st.st_mode):
                continue
            target = sc.readlink(name, dir_fd=parent)
            if not target.startswith("/"):
                target = (parent_path or "") + "/" + target
            path = target
        finally:
            sc.close(parent)
    raise _path_error(errno.ELOOP, path)


def lstat_in_root(root_fd: int, path: str) -> os.stat_result | None:
    """lstat of `path`'s last component (its parent resolved in the root); None if absent."""
    sc = syscalls.current()
    parent_path, _, name = path.rstrip("/").rpartition("/")
    if not name:
        return sc.fstat(root_fd)
    try:
        parent = open_in_root(root_fd, parent_path or "/", _O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        return sc.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return None
    finally:
        sc.close(parent)


def open_or_create_nofollow(root_fd: int, path: str, mode: int = 0o644) -> int:
    """An O_PATH fd of `path`'s last component itself (a symlink stays a symlink: the
    caller checks what it got), created as an empty regular file if missing; the parent
    directories resolve (and are made) inside the root."""
    sc = syscalls.current()
    parent_path, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise _path_error(errno.EINVAL, path)
    parent = mkdir_all(root_fd, parent_path or "/")
    try:
        try:
            sc.close(sc.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=parent))
        except FileExistsError:
            pass
        except OSError as exc:
            raise _path_error(exc.errno or errno.EIO, path) from None
        try:
            return sc.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise _path_error(exc.errno or errno.EIO, path) from None
    finally:
        sc.close(parent)
