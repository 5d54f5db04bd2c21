"""Terminals: the console socket handoff, the pty's properties, and foreground `run`."""

from __future__ import annotations

import array
import os
import pty
import select
import socket

import pytest

pytestmark = pytest.mark.root


class ConsoleReceiver:
    """The engine's side of --console-socket: listen, then take the pty master."""

    def __init__(self, directory) -> None:
        self.path = str(directory / "console.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.sock.settimeout(10)

    def receive(self) -> tuple[int, bytes]:
        conn, _ = self.sock.accept()
        with conn:
            fds = array.array("i")
            msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        assert len(fds) == 1
        return fds[0], msg

    def close(self) -> None:
        self.sock.close()


def read_all(fd: int, timeout: float = 10) -> str:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the slave side is closed
            break
        if not data:
            break
        out += data
    return out.decode(errors="replace")


def test_console_socket_handoff(ocirt, bundle, tmp_path):
    def edit(c):
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 111}
        c["process"]["args"] = ["sh", "-c", "tty; stty size; [ -t 0 ] && [ -t 1 ] && echo tty-ok;"
                                " stat -c '%t:%T' /dev/console; cat /proc/self/stat"]
    receiver = ConsoleReceiver(tmp_path)
    try:
        ocirt("create", "--console-socket", receiver.path, "--bundle", bundle(edit=edit), "c1",
              check=True)
        master, name = receiver.receive()
    finally:
        receiver.close()
    try:
        assert name.startswith(b"/dev/pts/")
        ocirt("start", "c1", check=True)
        out = read_all(master)
    finally:
        os.close(master)
    lines = out.replace("\r", "").splitlines()
    assert lines[0] == "/dev/pts/0"
    assert lines[1] == "33 111"
    assert "tty-ok" in lines
    assert "88:0" in lines  # /dev/console is the pty slave (major 136 = 0x88)
    stat = lines[-1].split(") ")[1].split()  # state ppid pgrp session tty_nr ...
    assert stat[3] == "1"  # in the session the init (PID 1) leads
    assert stat[4] == str(136 << 8)  # whose controlling terminal is /dev/pts/0


def test_terminal_without_console_socket_is_refused_by_create(ocirt, bundle):
    b = bundle(edit=lambda c: c["process"].update(terminal=True))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1 and "cannot allocate tty" in r.err
    r = ocirt("run", "-d", "--bundle", b, "c1")
    assert r.rc == 1 and "cannot allocate tty" in r.err


def test_console_socket_without_terminal_is_refused(ocirt, bundle, tmp_path):
    receiver = ConsoleReceiver(tmp_path)
    try:
        r = ocirt("create", "--console-socket", receiver.path, "--bundle", bundle(["true"]),
                  "c1")
    finally:
        receiver.close()
    assert r.rc == 1 and "cannot use console socket" in r.err


def test_foreground_run_relays_a_terminal(ocirt_bin, bundle, state_root):
    b = bundle(["sh", "-c", "read x; echo \"got:$x\"; tty; exit 5"],
               edit=lambda c: c["process"].update(terminal=True))
    pid, master = pty.fork()
    if pid == 0:
        os.execv(ocirt_bin, [ocirt_bin, "--root", state_root, "run", "--bundle", b, "c1"])
    try:
        os.write(master, b"hello\n")
        out = read_all(master)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 5
    assert "got:hello" in out and "/dev/pts/0" in out
