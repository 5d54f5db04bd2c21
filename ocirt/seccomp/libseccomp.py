"""A thin ctypes binding to libseccomp.so.2 (Debian 12 ships 2.5.4).

libseccomp does the hard part of seccomp: it knows every architecture's syscall table and
turns rules into a BPF program. We use it only in the parent (`create`, `exec`), to build
and export the program; the container's process loads the exported bytes itself, so
nothing in it needs the library. Loading the library costs about a millisecond, so this
module is imported only when a config has a seccomp profile.
"""

from __future__ import annotations

import ctypes
import os

from ocirt.errors import OcirtError

NR_SCMP_ERROR = -1  # __NR_SCMP_ERROR: the name is unknown on every architecture

# enum scmp_filter_attr
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_OPTIMIZE = 8


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libseccomp, loaded once, with the prototypes we use."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2")
        except OSError:
            raise OcirtError("linux.seccomp: libseccomp.so.2 is not installed (apt install "
                             "libseccomp2); refusing to run the container unconfined") from None
        _declare(lib)
        _lib = lib
    return _lib


def _declare(lib: ctypes.CDLL) -> None:
    u32, c_int, vp, cp = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    protos = {
        "seccomp_init": (vp, [u32]),
        "seccomp_release": (None, [vp]),
        "seccomp_arch_add": (c_int, [vp, u32]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_resolve_name": (u32, [cp]),
        "seccomp_syscall_resolve_name": (c_int, [cp]),
        "seccomp_syscall_resolve_name_arch": (c_int, [u32, cp]),
        "seccomp_syscall_resolve_num_arch": (vp, [u32, c_int]),
        "seccomp_rule_add_array": (c_int, [vp, u32, c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]),
        "seccomp_attr_set": (c_int, [vp, c_int, u32]),
        "seccomp_export_bpf": (c_int, [vp, c_int]),
        "seccomp_version": (ctypes.POINTER(_Version), []),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def version() -> str:
    v = library().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def arch_token(name: str) -> int:
    """The SCMP_ARCH_* token for libseccomp's arch name ("x86_64"), 0 if unknown."""
    return int(library().seccomp_arch_resolve_name(name.encode()))


def native_arch() -> int:
    return int(library().seccomp_arch_native())


def syscall_number(name: str, arch: int = 0) -> int:
    """The syscall's number on `arch` (0: native). Negative for a syscall that exists only
    on other architectures (a libseccomp pseudo number), NR_SCMP_ERROR if unknown."""
    lib = library()
    if arch:
        return int(lib.seccomp_syscall_resolve_name_arch(arch, name.encode()))
    return int(lib.seccomp_syscall_resolve_name(name.encode()))


def syscall_name(number: int, arch: int) -> str | None:
    """The name of syscall `number` on `arch`, None if there is none."""
    lib = library()
    ptr = lib.seccomp_syscall_resolve_num_arch(arch, number)
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        ctypes.CDLL(None).free(ctypes.c_void_p(ptr))


class FilterContext:
    """One scmp_filter_ctx; release() frees it (use as a context manager)."""

    def __init__(self, default_action: int) -> None:
        self.lib = library()
        self.ctx = self.lib.seccomp_init(default_action)
        if not self.ctx:
            raise OcirtError("linux.seccomp.defaultAction: libseccomp refused the default "
                             f"action {default_action:#x}")

    def __enter__(self) -> FilterContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.ctx:
            self.lib.seccomp_release(self.ctx)
            self.ctx = None

    def add_arch(self, token: int) -> int:
        """0, or a negative errno (-EEXIST when the arch is already there)."""
        return int(self.lib.seccomp_arch_add(self.ctx, token))

    def set_attr(self, attr: int, value: int) -> int:
        return int(self.lib.seccomp_attr_set(self.ctx, attr, value))

    def add_rule(self, action: int, syscall: int,
                 conditions: list[tuple[int, int, int, int]]) -> int:
        """seccomp_rule_add_array; conditions are (arg index, op, datum_a, datum_b)."""
        array = (ArgCmp * max(1, len(conditions)))(*[ArgCmp(*c) for c in conditions])
        return int(self.lib.seccomp_rule_add_array(self.ctx, action, syscall,
                                                   len(conditions), array))

    def export_bpf(self) -> bytes:
        """The BPF program (struct sock_filter[], host byte order)."""
        fd = os.memfd_create("ocirt-seccomp", os.MFD_CLOEXEC)
        try:
            rc = int(self.lib.seccomp_export_bpf(self.ctx, fd))
            if rc < 0:
                raise OcirtError(f"linux.seccomp: libseccomp could not export the filter: "
                                 f"{os.strerror(-rc)}")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
