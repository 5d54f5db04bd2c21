#!/usr/bin/env python3
"""A read-only FUSE file system that serves a local directory with an injected delay on
every request: a stand-in for slow shared storage (NFS, Lustre, CVMFS over a busy link)
where the kernel has no NFS server to test against.

    slowfs.py BACKING MOUNTPOINT [--latency-us 150] [--threads 1|N] [--shared-cpu]

It speaks the kernel's FUSE protocol on /dev/fuse itself (no libfuse bindings needed).
Nothing is cached by the kernel beyond what a network file system would keep: entries,
attributes and failed lookups expire at once (every path walk and stat is a request, as
on NFS mounted with `lookupcache=none,actimeo=0`); file pages stay in the page cache
between opens (FOPEN_KEEP_CACHE, NFS's close-to-open with an unchanged file).

Two server models:
  --threads 1   saturated: one server handles requests one at a time, so concurrent
                clients queue behind each other's delays (a loaded file server)
  --threads N   parallel: N requests are served at once, each delayed (a fast server
                behind a high-latency link)

The server runs with a real-time priority (SCHED_FIFO) unless --shared-cpu is given: a
file server is another machine, whose service time does not grow with its clients' CPU
load. Without it, this Python server shares the clients' CPUs and, with 64 interpreters
importing numpy on 2 CPUs, waits for a time slice in every request (5-17 ms per request
measured, where the model is 100-200 µs), so every request any client makes costs far
more than the model says.

Runs in the foreground until the mount is unmounted (umount MOUNTPOINT) or it gets
SIGTERM; prints "ready" on stdout once mounted. Root only (it mounts with allow_other).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import stat
import struct
import sys
import threading
import time

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr, 88 bytes
LOOKUP, FORGET, GETATTR, READLINK, OPEN, READ, STATFS, RELEASE = 1, 2, 3, 5, 14, 15, 17, 18
GETXATTR, LISTXATTR, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = 22, 23, 25, 26, 27, 28, 29
ACCESS, INTERRUPT, DESTROY, BATCH_FORGET = 34, 36, 38, 42
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}
FOPEN_KEEP_CACHE = 1 << 1
FUSE_ASYNC_READ, FUSE_PARALLEL_DIROPS, FUSE_MAX_PAGES = 1 << 0, 1 << 18, 1 << 22
MAX_PAGES = 32  # 128 KiB reads


class FS:
    def __init__(self, backing: str, latency: float) -> None:
        self.backing = os.path.realpath(backing)
        self.latency = latency
        self.paths: dict[int, str] = {1: self.backing}
        self.ids: dict[str, int] = {self.backing: 1}
        self.fds: dict[int, int] = {}
        self.lock = threading.Lock()
        self.next_fh = 1
        self.requests = 0
        self.busy = 0.0  # seconds spent serving requests, delays included

    def node(self, path: str) -> int:
        with self.lock:
            nid = self.ids.get(path)
            if nid is None:
                nid = len(self.paths) + 1
                self.paths[nid] = path
                self.ids[path] = nid
            return nid

    def attr(self, st: os.stat_result) -> bytes:
        return ATTR.pack(st.st_ino, st.st_size, st.st_blocks, int(st.st_atime),
                         int(st.st_mtime), int(st.st_ctime), 0, 0, 0, st.st_mode,
                         st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, 4096, 0)

    def handle(self, opcode: int, nodeid: int, body: bytes) -> bytes | int:
        """The reply's body, or a positive errno."""
        path = self.paths.get(nodeid)
        if path is None and opcode not in (INIT, DESTROY):
            return errno.ESTALE
        if opcode == LOOKUP:
            name = body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            child = os.path.join(path, name)
            try:
                st = os.lstat(child)
            except OSError as exc:
                return exc.errno or errno.EIO
            return struct.pack("<QQQQII", self.node(child), 0, 0, 0, 0, 0) + self.attr(st)
        if opcode == GETATTR:
            return struct.pack("<QII", 0, 0, 0) + self.attr(os.lstat(path))
        if opcode == READLINK:
            return os.fsencode(os.readlink(path))
        if opcode in (OPEN, OPENDIR):
            flags = struct.unpack_from("<I", body)[0]
            if flags & os.O_ACCMODE != os.O_RDONLY:
                return errno.EROFS
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if opcode == OPENDIR
                                                              else 0))
            with self.lock:
                fh = self.next_fh
                self.next_fh += 1
                self.fds[fh] = fd
            return struct.pack("<QII", fh, FOPEN_KEEP_CACHE if opcode == OPEN else 0, 0)
        if opcode == READ:
            fh, offset, size = struct.unpack_from("<QQI", body)
            return os.pread(self.fds[fh], size, offset)
        if opcode == READDIR:
            fh, offset, size = struct.unpack_from("<QQI", body)
            return self.readdir(path, offset, size)
        if opcode in (RELEASE, RELEASEDIR):
            fh = struct.unpack_from("<Q", body)[0]
            with self.lock:
                fd = self.fds.pop(fh, None)
            if fd is not None:
                os.close(fd)
            return b""
        if opcode in (FLUSH, ACCESS):
            return b""
        if opcode == STATFS:
            sv = os.statvfs(self.backing)
            return struct.pack("<QQQQQIII6I", sv.f_blocks, sv.f_bfree, sv.f_bavail,
                               sv.f_files, sv.f_ffree, sv.f_bsize, 255, sv.f_frsize, 0,
                               *([0] * 6))
        if opcode == INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            want = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES
            return struct.pack("<IIIIHHIIHHI7I", 7, 31, readahead, _flags & want, 64, 48,
                               4096, 1, MAX_PAGES, 0, 0, *([0] * 7))
        if opcode == DESTROY:
            return b""
        return errno.ENOSYS  # GETXATTR, LISTXATTR and the rest: the kernel stops asking

    def readdir(self, path: str, offset: int, size: int) -> bytes:
        names = [".", "..", *sorted(os.listdir(path))]
        out = bytearray()
        for i in range(offset, len(names)):
            name = os.fsencode(names[i])
            try:
                st = os.lstat(os.path.join(path, names[i]))
                ino, kind = st.st_ino, stat.S_IFMT(st.st_mode) >> 12
            except OSError:
                ino, kind = 0, 0
            entry = struct.pack("<QQII", ino or 1, i + 1, len(name), kind) + name
            entry += b"\0" * (-len(entry) % 8)
            if len(out) + len(entry) > size:
                break
            out += entry
        return bytes(out)


def serve(fuse_fd: int, fs: FS, done: threading.Event) -> None:
    while not done.is_set():
        try:
            raw = os.read(fuse_fd, (MAX_PAGES + 1) * 4096 + 4096)
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                continue
            done.set()  # ENODEV: unmounted
            return
        began = time.perf_counter()
        length, opcode, unique, nodeid = IN_HEADER.unpack_from(raw)[:4]
        fs.requests += 1
        if fs.latency:
            time.sleep(fs.latency)
        try:
            reply = fs.handle(opcode, nodeid, raw[IN_HEADER.size:length])
        except OSError as exc:
            reply = exc.errno or errno.EIO
        except (KeyError, struct.error):
            reply = errno.EINVAL
        if opcode in NO_REPLY:
            continue
        if isinstance(reply, int):
            msg = OUT_HEADER.pack(OUT_HEADER.size, -reply, unique)
        else:
            msg = OUT_HEADER.pack(OUT_HEADER.size + len(reply), 0, unique) + reply
        try:
            os.write(fuse_fd, msg)
        except OSError:
            pass  # the request was interrupted; the kernel has dropped it
        fs.busy += time.perf_counter() - began
        if opcode == DESTROY:
            done.set()


def mount(target: str) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,max_read=131072"
    flags = 1 | 2 | 4  # MS_RDONLY | MS_NOSUID | MS_NODEV
    if libc.mount(b"slowfs", os.fsencode(target), b"fuse.slowfs", flags,
                  options.encode()) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount fuse on {target}: {os.strerror(err)}")
    return fd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--latency-us", type=float, default=150.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared-cpu", action="store_true",
                   help="serve at the clients' priority (default: SCHED_FIFO, as a server "
                        "on another machine)")
    args = p.parse_args()
    if not args.shared_cpu:  # before the threads start: they inherit it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    fs = FS(args.backing, args.latency_us / 1e6)
    fuse_fd = mount(args.mountpoint)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    workers = [threading.Thread(target=serve, args=(fuse_fd, fs, done), daemon=True)
               for _ in range(max(1, args.threads))]
    for w in workers:
        w.start()
    print("ready", flush=True)
    while not done.wait(0.5):
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(args.mountpoint), 2)  # MNT_DETACH; no-op once unmounted
    mean = fs.busy / fs.requests * 1e6 if fs.requests else 0.0
    print(f"requests {fs.requests} service_us {mean:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
