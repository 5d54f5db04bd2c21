"""A recording fake of ocirt.linux.syscalls.Syscalls: an in-memory file tree.

Enough of the kernel for the path logic: directories, files, symlinks and device nodes,
fds (O_PATH or not), openat(2) with O_NOFOLLOW/O_CREAT/O_EXCL/O_DIRECTORY, openat2(2)
with RESOLVE_IN_ROOT (or ENOSYS, to drive the fallback walk), readlinkat (also with an
empty name on an O_PATH symlink fd), mkdirat, the /proc/self/fd/N magic links and
mount(2) onto them. Every call is recorded in `calls`; `before(k, action)` runs `action`
right before the k-th call, which is how a test swaps a directory for a symlink between
a check and its use (as a racing container would with renameat2(RENAME_EXCHANGE)).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ocirt.linux import consts as c
from ocirt.linux.syscalls import Syscalls

O_PATH = getattr(os, "O_PATH", c.O_PATH)
_INO = itertools.count(10)
_TYPES = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK,
          "chr": stat.S_IFCHR, "fifo": stat.S_IFIFO}


class Node:
    def __init__(self, kind: str, parent: Node | None = None, target: str = "",
                 rdev: int = 0, mode: int = 0o755) -> None:
        self.kind, self.parent, self.target, self.rdev = kind, parent, target, rdev
        self.mode = mode
        self.ino = next(_INO)
        self.children: dict[str, Node] = {}
        self.mounted: Node | None = None  # the root of what is mounted on top

    def top(self) -> Node:
        node = self
        while node.mounted is not None:
            node = node.mounted
        return node


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what)


class FakeSyscalls(Syscalls):
    def __init__(self, openat2: bool = True) -> None:
        self.root = Node("dir")
        self.has_openat2 = openat2
        self.fds: dict[int, tuple[Node, int]] = {}
        self._next_fd = itertools.count(100)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._hooks: dict[int, Callable[[], None]] = {}
        self.mounts: list[dict[str, Any]] = []

    # --- building the tree (not recorded) ----------------------------------------------

    def node(self, path: str, follow: bool = False) -> Node:
        """The node at a host path (intermediate symlinks followed host-style)."""
        return self._walk(self.root, path, follow_last=follow, in_root=False)

    def mkdirs(self, path: str) -> Node:
        cur = self.root
        for name in filter(None, path.split("/")):
            cur = cur.top()
            if name not in cur.children:
                cur.children[name] = Node("dir", cur)
            cur = cur.children[name]
        return cur

    def add(self, path: str, kind: str, target: str = "", rdev: int = 0) -> Node:
        parent_path, _, name = path.rstrip("/").rpartition("/")
        parent = self.mkdirs(parent_path).top()
        node = Node(kind, parent, target, rdev)
        parent.children[name] = node
        return node

    def swap(self, a: str, b: str) -> None:
        """renameat2(RENAME_EXCHANGE) of two host paths."""
        pa, _, na = a.rstrip("/").rpartition("/")
        pb, _, nb = b.rstrip("/").rpartition("/")
        da, db = self.node(pa).top(), self.node(pb).top()
        da.children[na], db.children[nb] = db.children[nb], da.children[na]
        da.children[na].parent, db.children[nb].parent = da, db

    def path_of(self, node: Node) -> str:
        parts = []
        while node is not self.root:
            if node.parent is None:  # the root of a mount: go on from what it covers
                covered = self._covered(node)
                if covered is None:
                    return "?"
                node = covered
                continue
            parent = node.parent
            name = next((n for n, child in parent.children.items() if child is node), None)
            if name is None:
                return "?"  # unlinked
            parts.append(name)
            node = parent
        return "/" + "/".join(reversed(parts))

    def _covered(self, mounted: Node) -> Node | None:
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n.mounted is mounted:
                return n
            stack.extend(n.children.values())
            if n.mounted is not None:
                stack.append(n.mounted)
        return None

    def inside(self, node: Node, root: Node) -> bool:
        path, top = self.path_of(node), self.path_of(root)
        return path == top or path.startswith(top.rstrip("/") + "/")

    def open_host(self, path: str) -> int:
        return self._new_fd(self.node(path).top(), O_PATH)

    def fd_node(self, fd: int) -> Node:
        return self.fds[fd][0]

    def before(self, k: int, action: Callable[[], None]) -> None:
        """Run `action` right before the k-th recorded call (0-based)."""
        self._hooks[k] = action

    # --- the calls ----------------------------------------------------------------------

    def _record(self, name: str, *args: Any) -> None:
        k = len(self.calls)
        self.calls.append((name, args))
        hook = self._hooks.pop(k, None)
        if hook is not None:
            hook()

    def _new_fd(self, node: Node, flags: int) -> int:
        fd = next(self._next_fd)
        self.fds[fd] = (node, flags)
        return fd

    def _dir_of(self, dir_fd: int | None) -> Node:
        if dir_fd is None:
            raise _err(errno.EINVAL, "relative path without dir_fd")
        node = self.fds[dir_fd][0]
        if node.kind != "dir":
            raise _err(errno.ENOTDIR)
        return node.top()

    def _magic(self, path: str) -> Node | None:
        if path.startswith("/proc/self/fd/"):
            return self.fds[int(path.rsplit("/", 1)[1])][0]
        return None

    def _walk(self, start: Node, path: str, follow_last: bool, in_root: bool,
              base: Node | None = None) -> Node:
        """Resolve `path` from `start`; in_root: RESOLVE_IN_ROOT with `start` as root."""
        root = start if in_root else self.root
        cur = (base or start) if not path.startswith("/") else root
        pending = [p for p in path.split("/") if p and p != "."]
        links = 0
        while pending:
            name = pending.pop(0)
            cur = cur.top()
            if cur.kind != "dir":
                raise _err(errno.ENOTDIR, path)
            if name == "..":
                if cur is not root.top() and cur.parent is not None:
                    cur = cur.parent
                continue
            nxt = cur.children.get(name)
            if nxt is None:
                raise _err(errno.ENOENT, path)
            if nxt.kind == "link" and (pending or follow_last):
                links += 1
                if links > 40:
                    raise _err(errno.ELOOP, path)
                if nxt.target.startswith("/"):
                    cur = root
                pending = [p for p in nxt.target.split("/") if p and p != "."] + pending
                continue
            cur = nxt
        return cur if cur.kind == "link" else cur.top()

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: int | None = None) -> int:
        self._record("open", path, flags, mode, dir_fd)
        magic = self._magic(path)
        if magic is not None:
            if magic.kind == "link" and not flags & O_PATH:
                raise _err(errno.ELOOP, path)
            return self._new_fd(magic, flags)
        parent = self.root if path.startswith("/") else self._dir_of(dir_fd)
        head, _, name = path.rstrip("/").rpartition("/")
        if head:
            parent = self._walk(parent, head, follow_last=True, in_root=False, base=parent)
        parent = parent.top()
        node = parent.children.get(name)
        if flags & os.O_CREAT:
            if node is not None and flags & os.O_EXCL:
                raise _err(errno.EEXIST, path)
            if node is None:
                node = Node("file", parent, mode=mode)
                parent.children[name] = node
                return self._new_fd(node, flags)
        if node is None:
            raise _err(errno.ENOENT, path)
        if node.kind == "link":
            if flags & os.O_NOFOLLOW:
                if flags & O_PATH:
                    return self._new_fd(node, flags)
                raise _err(errno.ELOOP, path)
            node = self._walk(parent, node.target, follow_last=True, in_root=False,
                              base=parent)
        node = node.top()
        if flags & os.O_DIRECTORY and node.kind != "dir":
            raise _err(errno.ENOTDIR, path)
        return self._new_fd(node, flags)

    def openat2(self, dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
        self._record("openat2", dirfd, path, flags, mode, resolve)
        if not self.has_openat2:
            raise _err(errno.ENOSYS)
        assert resolve & c.RESOLVE_IN_ROOT, "the resolver only uses RESOLVE_IN_ROOT"
        root = self.fds[dirfd][0].top()
        node = self._walk(root, path, follow_last=not flags & os.O_NOFOLLOW, in_root=True)
        if node.kind == "link" and not flags & O_PATH:
            raise _err(errno.ELOOP, path)
        if flags & os.O_DIRECTORY and node.kind != "dir":
            raise _err(errno.ENOTDIR, path)
        return self._new_fd(node, flags)

    def close(self, fd: int) -> None:
        self._record("close", fd)
        del self.fds[fd]

    def dup(self, fd: int) -> int:
        self._record("dup", fd)
        return self._new_fd(*self.fds[fd])

    def fstat(self, fd: int) -> Any:
        self._record("fstat", fd)
        return self._stat(self.fds[fd][0])

    def _stat(self, node: Node) -> Any:
        return SimpleNamespace(st_mode=_TYPES[node.kind] | node.mode, st_ino=node.ino,
                               st_rdev=node.rdev, st_dev=0)

    def lstat(self, name: str, dir_fd: int) -> Any:
        self._record("lstat", name, dir_fd)
        node = self._dir_of(dir_fd).children.get(name)
        if node is None:
            raise _err(errno.ENOENT, name)
        return self._stat(node)

    def readlink(self, path: str, dir_fd: int | None = None) -> str:
        self._record("readlink", path, dir_fd)
        magic = self._magic(path)
        if magic is not None:
            return self.path_of(magic)
        node = self.fds[dir_fd][0] if path == "" and dir_fd is not None else \
            self._dir_of(dir_fd).children.get(path)
        if node is None:
            raise _err(errno.ENOENT, path)
        if node.kind != "link":
            raise _err(errno.EINVAL, path)
        return node.target

    def mkdir(self, name: str, mode: int, dir_fd: int) -> None:
        self._record("mkdir", name, mode, dir_fd)
        parent = self._dir_of(dir_fd)
        if name in parent.children:
            raise _err(errno.EEXIST, name)
        parent.children[name] = Node("dir", parent, mode=mode)

    def chmod(self, path: str, mode: int) -> None:
        self._record("chmod", path, mode)
        node = self._magic(path) or self.node(path, follow=True)
        node.mode = mode

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None, what: str | None = None) -> None:
        self._record("mount", source, target, fstype, flags, data, what)
        node = self._magic(target)
        if node is None:
            raise AssertionError(f"mount on a path string, not an fd: {target}")
        if node.kind == "link":
            raise _err(errno.ELOOP, target)
        self.mounts.append({"source": source, "target": node, "fstype": fstype})
        if fstype == "tmpfs":
            node.top().mounted = Node("dir", None)
