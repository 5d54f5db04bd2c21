"""Path resolution confined to the container's root filesystem.

Every path from config.json or from the image (mount destinations, device nodes, masked
paths, the console) is resolved *inside* the rootfs: a symlink in the image, absolute or
relative, dangling or racing, must never make ocirt touch a host path. The kernel does
this for us with openat2(RESOLVE_IN_ROOT); on kernels without openat2 a component-by-
component walk on O_PATH|O_NOFOLLOW file descriptors does the same. Callers get file
descriptors, never path strings, and mount through `/proc/self/fd/N` (`fd_path`).
"""

from __future__ import annotations

import errno
import os
import stat

from ocirt.linux import consts as c

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
        from ocirt.linux import libc

        try:
            fd = libc.openat2(root_fd, path.lstrip("/") or ".", flags, mode,
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
    pending = components(path)
    cur = os.dup(root_fd)
    stack: list[int] = []  # fds of the directories above `cur`, for ".."
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if stack:
                    os.close(cur)
                    cur = stack.pop()
                continue
            try:
                nxt = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except OSError as exc:
                raise _path_error(exc.errno or errno.EIO, path) from None
            st = os.fstat(nxt)
            if stat.S_ISLNK(st.st_mode) and (pending or not flags & os.O_NOFOLLOW):
                target = os.readlink(name, dir_fd=cur)
                os.close(nxt)
                links += 1
                if links > MAX_SYMLINKS:
                    raise _path_error(errno.ELOOP, path)
                if target.startswith("/"):
                    for fd in stack:
                        os.close(fd)
                    stack.clear()
                    os.close(cur)
                    cur = os.dup(root_fd)
                pending = components(target) + pending
                continue
            stack.append(cur)
            cur = nxt
        if flags & ~(os.O_CLOEXEC | os.O_NOFOLLOW) == _O_PATH:
            result, cur = cur, -1
            return result
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(cur).st_mode):
            raise _path_error(errno.ENOTDIR, path)
        return os.open(fd_path(cur), flags & ~os.O_NOFOLLOW, mode)
    finally:
        for fd in stack:
            os.close(fd)
        if cur >= 0:
            os.close(cur)


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
    parts = components(path)
    parent = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            try:
                fd = open_in_root(root_fd, "/".join(parts[: i + 1]), _O_PATH | os.O_DIRECTORY)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            else:
                os.close(parent)
                parent = fd
                continue
            if name == "..":
                raise _path_error(errno.ENOENT, path)
            try:
                os.mkdir(name, mode, dir_fd=parent)
                return path
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                raise _path_error(errno.ENOTDIR, "/" + "/".join(parts[: i + 1]))
            target = os.readlink(name, dir_fd=parent)
            base = "" if target.startswith("/") else "/".join(parts[:i])
            return "/".join(filter(None, (base, target.lstrip("/"), *parts[i + 1 :])))
        return path
    finally:
        os.close(parent)


def create_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """Make sure a regular file (or any non-directory) exists at `path` inside the root,
    creating parents as needed; return an O_PATH fd of it."""
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
                new = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, mode, dir_fd=parent)
                os.close(new)
                continue
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                continue
            target = os.readlink(name, dir_fd=parent)
            if not target.startswith("/"):
                target = (parent_path or "") + "/" + target
            path = target
        finally:
            os.close(parent)
    raise _path_error(errno.ELOOP, path)


def lstat_in_root(root_fd: int, path: str) -> os.stat_result | None:
    """lstat of `path`'s last component (its parent resolved in the root); None if absent."""
    parent_path, _, name = path.rstrip("/").rpartition("/")
    if not name:
        return os.fstat(root_fd)
    try:
        parent = open_in_root(root_fd, parent_path or "/", _O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)


def open_or_create_nofollow(root_fd: int, path: str, mode: int = 0o644) -> int:
    """An O_PATH fd of `path`'s last component itself (a symlink stays a symlink: the
    caller checks what it got), created as an empty regular file if missing; the parent
    directories resolve (and are made) inside the root."""
    parent_path, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise _path_error(errno.EINVAL, path)
    parent = mkdir_all(root_fd, parent_path or "/")
    try:
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=parent))
        except FileExistsError:
            pass
        except OSError as exc:
            raise _path_error(exc.errno or errno.EIO, path) from None
        try:
            return os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise _path_error(exc.errno or errno.EIO, path) from None
    finally:
        os.close(parent)
