"""What `ocirt features` says about seccomp, found out rather than assumed: whether
libseccomp loads, which architectures it knows, which filter flags the kernel accepts."""

from __future__ import annotations

from ocirt.errors import OcirtError
from ocirt.seccomp import profile as prof

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any


def probe() -> dict[str, Any]:
    from ocirt.seccomp import libseccomp
    from ocirt.seccomp.compile import flag_supported

    try:
        libseccomp.library()
    except OcirtError:
        return {"enabled": False}
    if not flag_supported(0):  # a kernel without seccomp filters
        return {"enabled": False}
    supported = [name for name, bit in prof.FLAGS.items() if flag_supported(bit)]
    return {
        "enabled": True,
        "actions": sorted(prof.ACTIONS),
        "operators": sorted(prof.OPERATORS),
        "archs": sorted(a for a in prof.ARCHES
                        if libseccomp.arch_token(prof.libseccomp_arch_name(a))),
        "knownFlags": list(prof.FLAGS),
        "supportedFlags": supported,
    }
