"""terminal: a pty for the process, its master handed to the console socket."""

from __future__ import annotations

import os
import re

import pytest

from conformance import procfs
from conformance.cases import case, deviation

pytestmark = pytest.mark.root


def _tty(h, args, edit=None, size=None):
    def full(cfg):
        cfg["process"]["terminal"] = True
        if size:
            cfg["process"]["consoleSize"] = {"height": size[0], "width": size[1]}
        if edit:
            edit(cfg)
    return h.bundle(args, edit=full)


def _on_console(h, args, edit=None, size=None):
    """create with a console socket, start, and return (container, receiver)."""
    rx = h.console()
    c = h.create(_tty(h, args, edit, size), extra=("--console-socket", rx.path))
    assert rx.received.wait(10), "the runtime sent no pty master to the console socket"
    c.start()
    return c, rx


@case("TT-01", "config.md#process terminal", "MUST")
def test_stdio_is_pty(h):
    """with terminal true, stdin, stdout and stderr are the slave of a new pty"""
    script = ("for fd in 0 1 2; do printf fd$fd=; readlink /proc/self/fd/$fd; done; "
              "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; echo end-of-test")
    _, rx = _on_console(h, ["sh", "-c", script])
    out = rx.wait_output("end-of-test")
    for fd in range(3):
        assert f"fd{fd}=/dev/pts/" in out, out
    assert "all-ttys" in out


@case("TT-02", "config.md#process terminal", "MUST")
def test_typing(h):
    """what the console owner types reaches the process"""
    c, rx = _on_console(h, ["sh", "-c", "echo prompt; read line; echo typed:$line"])
    rx.wait_output("prompt")
    rx.write("conformance\r")
    rx.wait_output("typed:conformance")
    c.wait_stopped()


@case("TT-03", "config.md#process consoleSize", "SHOULD")
def test_console_size(h):
    """consoleSize sets the pty's rows and columns"""
    _, rx = _on_console(h, ["sh", "-c", "echo size=$(stty size)"], size=(31, 97))
    assert "size=31 97" in rx.wait_output("size=")


@case("TT-04", "config-linux.md#default-devices", "MUST")
def test_dev_console(h):
    """/dev/console exists and is the container's pty (a devpts char device)"""
    script = ("echo console=$(stat -L -c '%F %t' /dev/console); "
              "grep ' /dev/console ' /proc/self/mountinfo; echo end-of-test")
    _, rx = _on_console(h, ["sh", "-c", script])
    out = rx.wait_output("end-of-test")
    assert "console=character special file 88" in out, out  # 0x88 = 136, unix98 pty
    assert " - devpts " in out, out


@case("TT-05", "runc: terminal", "RUNC")
def test_controlling_terminal(h):
    """the pty is the process's controlling terminal"""
    _, rx = _on_console(h, ["sh", "-c", "echo tty_nr=$(cut -d' ' -f7 /proc/self/stat)"])
    out = rx.wait_output("tty_nr=")
    nr = out.split("tty_nr=")[1].split()[0]
    assert nr.isdigit() and int(nr) >> 8 & 0xFFF in range(136, 144), out


@case("TT-06", "runc: terminal", "RUNC")
def test_pty_owner(h):
    """the pty slave belongs to the process's user"""
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    _, rx = _on_console(h, ["sh", "-c", "echo owner=$(stat -L -c %u /proc/self/fd/0)"],
                        edit=edit)
    assert "owner=1000" in rx.wait_output("owner=")


@case("TT-07", "runc: create --console-socket", "RUNC")
def test_terminal_without_socket_fails(h):
    """create of a terminal container without --console-socket fails"""
    c = h.create(_tty(h, ["true"]), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []


@deviation("crun", "crun 1.8.1 accepts --console-socket for a container without terminal")
@case("TT-08", "runc: create --console-socket", "RUNC")
def test_socket_without_terminal_fails(h):
    """--console-socket for a container without terminal fails"""
    rx = h.console()
    c = h.create(h.bundle(["true"]), extra=("--console-socket", rx.path), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []


@case("TT-09", "config.md#process terminal", "MUST")
def test_terminal_host_view(h):
    """from the host, the running process's fds 0-2 are one pty slave"""
    c, rx = _on_console(h, ["sh", "-c", "echo ready; exec sleep 1000"])
    rx.wait_output("ready")
    targets = {os.readlink(f"/proc/{c.pid}/fd/{fd}") for fd in range(3)}
    # (seen from a chroot, the path carries the chroot's own prefix)
    assert len(targets) == 1 and re.search(r"/dev/pts/\d+$", targets.pop()), targets
    assert procfs.alive(c.pid)
