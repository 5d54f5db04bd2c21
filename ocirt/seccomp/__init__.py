"""Seccomp: compile `linux.seccomp` into a BPF filter (in `create`, where errors can still
be reported) and install it in the container process right before execve.

Interface used by the runtime:

    filt = compile_filter(spec_seccomp)   # OcirtError naming the field on bad input
    filt.install()                        # in the child, last thing before execve

Until the libseccomp binding lands, a config with a seccomp profile is refused rather than
run unconfined.
"""

from __future__ import annotations

from typing import Any

from ocirt.errors import ConfigError


def compile_filter(seccomp: dict[str, Any]) -> Any:
    raise ConfigError("linux.seccomp: seccomp profiles are not supported by this ocirt build "
                      "yet; refusing to run the container unconfined")
