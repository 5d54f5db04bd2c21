"""A console-socket receiver: what an engine does with `--console-socket`.

The runtime connects to the AF_UNIX socket and sends the pty master with SCM_RIGHTS;
the receiver keeps the master, collects everything the container writes to its
terminal, and can type into it.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time


class ConsoleReceiver:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.master: int | None = None
        self.received = threading.Event()
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(60)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
            except OSError:
                fds = []
        if not fds:
            return
        self.master = fds[0]
        for extra in fds[1:]:
            os.close(extra)
        self.received.set()
        self._pump()

    def _pump(self) -> None:
        assert self.master is not None
        while not self._closed:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every slave end is closed
                return
            if not data:
                return
            with self._lock:
                self._buf += data

    def output(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace")

    def wait_output(self, text: str, timeout: float = 10) -> str:
        end = time.monotonic() + timeout
        while text not in self.output() and time.monotonic() < end:
            time.sleep(0.02)
        out = self.output()
        assert text in out, f"{text!r} not seen on the terminal: {out!r}"
        return out

    def write(self, data: str) -> None:
        assert self.received.wait(10), "no pty master received"
        assert self.master is not None
        os.write(self.master, data.encode())

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
