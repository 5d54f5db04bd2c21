"""The last step into the container: a tiny sealed executable instead of Python.

ocirt's container init is a forked Python process. Left as it is until the user process
starts, two things would follow:

* CVE-2019-5736 for Python: at the final execve, /proc/self/exe is the host's Python
  interpreter. An image whose program is a `#!/proc/self/exe` script makes the kernel
  run that interpreter inside the container, where the container can grab the inode
  through /proc/<pid>/exe and rewrite the host's Python once nothing runs it. runc
  answers this by running `runc init` from a sealed copy of itself.
* A created container would keep a whole interpreter waiting for `start` (~11 MB).

So the init (and every `exec`) ends by exec'ing a ~200-byte static ELF held in a sealed
memfd (no writes, no resize, no new seals, not readable). It marks itself non-dumpable,
optionally waits on the exec fifo for `start`, sets the fifo close-on-exec and execs the
user process, same PID. If that fails it writes "X" and the errno to the fifo for `start`
to report, and exits 127 (ENOENT) or 126. From the first execve on, nothing in the
container's namespaces maps the host interpreter: /proc/<pid>/exe is the sealed memfd,
then the user's program.

The machine code comes from `x86_64.s` and `aarch64.s` beside this file (assembled with
GNU as: `as --64 x86_64.s -o t.o && objcopy -O binary -j .text t.o t.bin`). Where no
trampoline can run (another architecture, a kernel or filter refusing executable
memfds: vm.memfd_noexec, seccomp, an LSM) the container is refused with an error that
says what is missing, as runc refuses to run when it cannot seal its binary: the host
interpreter never becomes the container's executable.

Its argv: ["ocirt-init", <fifo fd, or "-" not to wait>, <path>, <argv of the process>...];
its environment is the process's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from ocirt.errors import OcirtError, errno_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_CODE = {
    "x86_64": (62, bytes.fromhex(
        "4c8b24244c8d6c24084e8d74e410b89d000000bf0400000031f60f05498b75084531ff803e2d74470fb60685"
        "c0740f83e830456bff0a4101c748ffc6ebea31c04489ff488d7424f8ba010000000f054883f8fc74e94883f8"
        "017563b8480000004489ffbe02000000ba010000000f05b83b000000498b7d10498d75184c89f20f0548f7d8"
        "89c34585ff741dc64424f858885c24f9b8010000004489ff488d7424f8ba020000000f05bf7e00000083fb02"
        "7505bf7f000000b8e70000000f05b8e7000000bf010000000f05")),
    "aarch64": (183, bytes.fromhex(
        "f30340f9f4230091950e138bb5220091800080d2010080d2e81480d2010000d4810640f91600805222004039"
        "5fb400710003005422004039c200003442c0005143018052d60a031b21040091faffff17ff4300d1e003162a"
        "e1030091220080d2e80780d2010000d41f1000b140ffff541f0400f1a1030054e003162a410080d2220080d2"
        "280380d2010000d4ff430091800a40f981620091e20315aaa81b80d2010000d4f70300cb56010034ff4300d1"
        "020b8052e2030039f7070039e003162ae1030091420080d2080880d2010000d4c00f80d2ff0a00f141000054"
        "e00f80d2c80b80d2010000d4200080d2c80b80d2010000d4")),
}
_BASE = 0x400000
_MFD_CLOEXEC, _MFD_ALLOW_SEALING, _MFD_EXEC = 0x1, 0x2, 0x10
_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE
NAME = "ocirt-init"


# What uname reports for a 64-bit kernel to a process with the PER_LINUX32 personality
# (linux.personality LINUX32): the CPU still runs our ELF64, as it runs this interpreter.
_LINUX32_NAMES = {"i686": "x86_64", "armv8l": "aarch64"}


def host_machine() -> str:
    """The architecture this interpreter runs on. uname's answer is bent by the
    LINUX32 personality; a 64-bit interpreter proves the kernel and CPU are 64-bit."""
    machine = os.uname().machine
    if struct.calcsize("P") == 8:
        return _LINUX32_NAMES.get(machine, machine)
    return machine


def elf_image(machine: str | None = None) -> bytes | None:
    """A minimal static ELF64 (one read+exec PT_LOAD segment) for `machine`."""
    entry = _CODE.get(machine or host_machine())
    if entry is None:
        return None
    e_machine, code = entry
    header_size, phdr_size = 64, 56
    total = header_size + phdr_size + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, e_machine, 1,
                                 _BASE + header_size + phdr_size, header_size, 0, 0,
                                 header_size, phdr_size, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, total, total, 0x10000)
    return header + phdr + code


class TrampolineError(OcirtError):
    """The sealed trampoline cannot be made or run here."""


def sealed_fd(machine: str | None = None) -> int:
    """The trampoline in a sealed, execute-only memfd (close-on-exec). Raises
    TrampolineError naming what is missing when this machine cannot have one."""
    machine = machine or host_machine()
    image = elf_image(machine)
    if image is None:
        raise TrampolineError(f"no sealed init trampoline for the {machine} architecture "
                              "(ocirt has x86_64 and aarch64): ocirt will not start a "
                              "container from its host interpreter")
    try:
        fd = os.memfd_create(NAME, _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # kernels before 6.3 do not know MFD_EXEC
            raise _refused("memfd_create(MFD_EXEC)", exc) from None
        try:
            fd = os.memfd_create(NAME, _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
        except OSError as exc2:
            raise _refused("memfd_create", exc2) from None
    try:
        os.write(fd, image)
        os.fchmod(fd, 0o111)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as exc:
        os.close(fd)
        raise _refused("sealing the memfd", exc) from None
    return fd


def execve(fd: int, args: list[str], env: dict[str, str]) -> NoReturn:
    """Exec the trampoline: by fd (execveat), else through /proc/self/fd (a seccomp
    profile may refuse execveat yet allow execve). Returns only with TrampolineError."""
    try:
        os.execve(fd, args, env)
    except OSError as exc:
        first = exc
    try:
        os.execve(f"/proc/self/fd/{fd}", args, env)
    except OSError:
        pass
    raise _refused("executing it", first)


def _refused(step: str, exc: OSError) -> TrampolineError:
    return TrampolineError(
        f"cannot run the sealed init trampoline ({step}: {errno_text(exc.errno or 0)}): "
        "executable memfds are refused here (vm.memfd_noexec, a seccomp filter or an "
        "LSM), and ocirt will not let its host interpreter become the container's "
        "executable")


def argv(fifo_fd: int, path: str, args: list[str]) -> list[str]:
    return [NAME, str(fifo_fd) if fifo_fd >= 0 else "-", path, *args]


def failure(data: bytes) -> str | None:
    """The errno text when `data` (what was left in the exec fifo) is the trampoline's
    exec-failure report."""
    if len(data) >= 2 and data[:1] == b"X":
        return errno_text(data[1])
    return None
