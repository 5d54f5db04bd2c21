"""The sealed trampoline that performs the final execve (no root needed)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess

import pytest

from ocirt.process import trampoline


@pytest.mark.parametrize("machine,e_machine", [("x86_64", 62), ("aarch64", 183)])
def test_elf_header(machine, e_machine):
    image = trampoline.elf_image(machine)
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1
    assert int.from_bytes(image[18:20], "little") == e_machine
    assert len(image) < 400


def test_unknown_architecture_has_no_trampoline():
    assert trampoline.elf_image("sparc64") is None


def test_sealed_fd_cannot_be_changed():
    fd = trampoline.sealed_fd()
    assert fd >= 0
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & 0xF == 0xF  # SEAL | SHRINK | GROW | WRITE
        with pytest.raises(OSError):
            os.write(fd, b"x")
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:ocirt-init")
    finally:
        os.close(fd)


def run_trampoline(fifo: str, args: list[str], wait: bool) -> tuple[subprocess.Popen, int]:
    fd = trampoline.sealed_fd()
    fifo_fd = os.open(fifo, os.O_RDWR) if wait else -1
    argv = trampoline.argv(fifo_fd, args[0], args)
    proc = subprocess.Popen(argv, executable=f"/proc/self/fd/{fd}",
                            pass_fds=(fd, fifo_fd) if wait else (fd,), stdout=subprocess.PIPE)
    os.close(fd)
    if wait:
        os.close(fifo_fd)
    return proc, fifo_fd


def test_no_wait_mode_execs_at_once():
    proc, _ = run_trampoline("", ["/bin/echo", "hello"], wait=False)
    out, _ = proc.communicate(timeout=10)
    assert (proc.returncode, out) == (0, b"hello\n")


def test_waits_for_start_then_reports_exec_failure(tmp_path):
    fifo = str(tmp_path / "exec.fifo")
    os.mkfifo(fifo)
    proc, _ = run_trampoline(fifo, ["/nonexistent/prog"], wait=True)
    try:
        assert proc.poll() is None  # blocked on the fifo
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"\0")
        os.close(writer)
        poller = select.poll()
        poller.register(reader, 0)
        assert poller.poll(10_000)
        data = os.read(reader, 16)
        os.close(reader)
    finally:
        proc.wait(10)
    assert proc.returncode == 127
    assert trampoline.failure(data) == "no such file or directory"
