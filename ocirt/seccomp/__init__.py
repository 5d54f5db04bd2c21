"""Seccomp: compile `linux.seccomp` into a BPF filter (in `create` or `exec`, where errors
can still be reported) and install it in the container process right before execve.

Interface used by the runtime:

    filt = compile_filter(spec_seccomp)   # OcirtError naming the field on bad input;
                                          # None when the profile asks for no filter
    filt.fds()                            # fds the child must keep (the notify agent)
    filt.install(state, pid)              # in the child, last thing before execve

libseccomp (through ocirt.seccomp.libseccomp) builds the program in the runtime's
process; the child loads the exported bytes with seccomp(2) and needs no library.
Importing this package loads nothing: the work starts in compile_filter, and FEATURES is
probed the first time `ocirt features` reads it.

Modules: profile (checking and converting the spec), libseccomp (the binding), bpf (the
-ENOSYS stub), compile (profile -> filter), filter (loading, notify), features.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs ~2 ms, on every create with a profile
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def compile_filter(seccomp: dict[str, Any], cache_dir: str | None = None) -> Any:
    """The ocirt.seccomp.filter.Filter for `linux.seccomp`, or None for no filter.
    With `cache_dir`, compiled programs are reused (ocirt.seccomp.cache)."""
    from ocirt.seccomp import profile

    parsed = profile.parse(seccomp)
    if parsed is None:
        return None
    if cache_dir:
        from ocirt.seccomp.cache import cached_filter

        return cached_filter(parsed, seccomp, cache_dir)
    from ocirt.seccomp.compile import compile_profile

    return compile_profile(parsed)


class _Features:
    """runtime-spec features.md's linux.seccomp object, probed on first use; reads like
    a dict (`dict(FEATURES)` works)."""

    def __init__(self) -> None:
        self._data: dict[str, Any] | None = None

    def _probed(self) -> dict[str, Any]:
        if self._data is None:
            from ocirt.seccomp.features import probe

            self._data = probe()
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._probed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._probed())

    def __len__(self) -> int:
        return len(self._probed())

    def keys(self) -> Any:
        return self._probed().keys()

    def get(self, key: str, default: Any = None) -> Any:
        return self._probed().get(key, default)


FEATURES = _Features()
