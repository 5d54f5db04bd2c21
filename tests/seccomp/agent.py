"""A small seccomp notify agent, as an engine's would be (runc's tests/cmd/seccompagent).

It listens on a unix socket, takes one connection from the runtime, receives the
container process state (JSON) with the listener fd (SCM_RIGHTS), then answers every
notified syscall with `answer(nr, args) -> (error, val)`: an error (negative errno, or 0
with a return value) or CONTINUE to let the kernel run the syscall.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

NOTIF = struct.Struct("=QIIiIQ6Q")  # struct seccomp_notif (with struct seccomp_data)
RESP = struct.Struct("=QqiI")  # struct seccomp_notif_resp
IOCTL_NOTIF_RECV = (3 << 30) | (NOTIF.size << 16) | (ord("!") << 8) | 0
IOCTL_NOTIF_SEND = (3 << 30) | (RESP.size << 16) | (ord("!") << 8) | 1
FLAG_CONTINUE = 1
CONTINUE = "continue"


class Agent:
    """Runs in a thread; `state`, `fds_received` and `seen` (pid, nr, args) are what it
    got; `error` is set if anything went wrong on its side."""

    def __init__(self, path: str, answer: Callable[[int, tuple[int, ...]], Any]) -> None:
        self.path = path
        self.answer = answer
        self.state: dict[str, Any] | None = None
        self.fds_received = 0
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []
        self.error: BaseException | None = None
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Agent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(10)
        assert not self.thread.is_alive(), "seccomp agent did not stop"
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self.server.close()
        os.unlink(self.path)

    def _run(self) -> None:
        try:
            listener = self._accept()
            if listener >= 0:
                try:
                    self._serve(listener)
                finally:
                    os.close(listener)
        except BaseException as exc:  # reported by the test through .error
            self.error = exc

    def _wait(self, fd: int) -> bool:
        """Until `fd` is readable (True) or the test stops us (False)."""
        ready, _, _ = select.select([fd, self._stop_r], [], [])
        return fd in ready

    def _accept(self) -> int:
        if not self._wait(self.server.fileno()):
            return -1
        conn, _ = self.server.accept()
        with conn:
            if not self._wait(conn.fileno()):
                return -1
            fds = array.array("i")
            data, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        self.fds_received = len(fds)
        self.state = json.loads(data)
        for extra in fds[1:]:
            os.close(extra)
        return fds[0] if fds else -1

    def _serve(self, listener: int) -> None:
        while True:
            poller = select.poll()
            poller.register(listener, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            events = dict(poller.poll())
            if self._stop_r in events:
                return
            if events.get(listener, 0) & select.POLLHUP:
                return  # every process under the filter is gone
            buf = bytearray(NOTIF.size)
            try:
                fcntl.ioctl(listener, IOCTL_NOTIF_RECV, buf)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR):
                    continue  # the notifying process died meanwhile
                raise
            nid, pid, _, nr, _, _, *args = NOTIF.unpack(buf)
            self.seen.append((pid, nr, tuple(args)))
            self._reply(listener, nid, self.answer(nr, tuple(args)))

    def _reply(self, listener: int, nid: int, answer: Any) -> None:
        if answer == CONTINUE:
            resp = RESP.pack(nid, 0, 0, FLAG_CONTINUE)
        else:
            error, val = answer
            resp = RESP.pack(nid, val, error, 0)
        try:
            fcntl.ioctl(listener, IOCTL_NOTIF_SEND, bytearray(resp))
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # the process died before the answer
                raise
