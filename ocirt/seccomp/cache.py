"""Compiled filters kept under the state root, keyed by what decides the program.

Compiling podman's default profile (434 syscalls in 19 rules) costs libseccomp 15-30 ms,
and engines send the same profile with every container. The program depends only on the
profile's JSON, the libseccomp version and the kernel (flags, architecture), so it is
cached as a file under `<root>/@cache/seccomp`, which only the runtime's user can write
(the state root is mode 0700): a cached program is as trusted as the runtime itself.
"""

from __future__ import annotations

import hashlib
import os
import struct

from ocirt.seccomp.filter import Filter, Listener

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

    from ocirt.seccomp.profile import Profile

FORMAT = b"ocirt-seccomp-1"
MAX_ENTRIES = 64


def cache_key(raw: dict[str, Any]) -> str:
    from ocirt import jsonio
    from ocirt.seccomp import libseccomp

    uname = os.uname()
    parts = [FORMAT, jsonio.dumps(raw).encode(), libseccomp.version().encode(),
             uname.machine.encode(), uname.release.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def cached_filter(parsed: Profile, raw: dict[str, Any], directory: str) -> Filter:
    """The filter from the cache, or compiled (and stored) when it is not there."""
    from ocirt.seccomp.compile import compile_profile

    path = os.path.join(directory, cache_key(raw) + ".bpf")
    program, flags = _read(path)
    if program is None:
        filt = compile_profile(parsed)
        _store(directory, path, filt)
        return filt
    listener = None
    if parsed.uses_notify:
        listener = Listener(parsed.listener_path, parsed.listener_metadata)
    return Filter(program, flags, listener)


def _read(path: str) -> tuple[bytes | None, int]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None, 0
    head = len(FORMAT) + 4
    if len(data) <= head or not data.startswith(FORMAT) or (len(data) - head) % 8:
        return None, 0
    return data[head:], struct.unpack_from("<I", data, len(FORMAT))[0]


def _store(directory: str, path: str, filt: Filter) -> None:
    """Best effort: a failure to cache never fails the container."""
    from ocirt.state import make_private_dirs, write_atomic

    try:
        make_private_dirs(directory)
        _trim(directory)
        write_atomic(path, FORMAT + struct.pack("<I", filt.flags) + filt.program)
    except OSError:
        pass


def _trim(directory: str) -> None:
    entries = [e for e in os.scandir(directory) if e.name.endswith(".bpf")]
    if len(entries) < MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime)
    for entry in entries[: len(entries) - MAX_ENTRIES + 1]:
        try:
            os.unlink(entry.path)
        except OSError:
            pass
