"""The same bundle under runc and ocirt: what the process sees must match.

Where the runtime-spec leaves room, runc is the reference engines and users expect. Each
probe runs in a container under both runtimes and the normalized outputs are compared.
"""

from __future__ import annotations

import re
import shutil

import pytest

from conformance.runner import Runtime
from tests.conftest import IN_CHROOT

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed"),
              pytest.mark.skipif(IN_CHROOT, reason="runc cannot run containers in a chroot")]

PROBES = {
    "identity": "id; umask; pwd; hostname; cat /proc/sys/kernel/domainname",
    "environment": "env | sort",
    "capabilities": "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
    "limits": "ulimit -a",
    "mounts": "cat /proc/self/mountinfo",
    "dev": "ls -l /dev /dev/pts /dev/shm /dev/mqueue",
    "processes": "ps -o pid,user,comm",
    "fds": "ls /proc/self/fd",
}


def normalize(name: str, text: str) -> str:
    if name == "mounts":  # mount point, fs type and the mount's own options
        rows = []
        for line in text.splitlines():
            left, _, right = line.partition(" - ")
            f = left.split()
            fstype = right.split()[0]
            opts = ",".join(o for o in f[5].split(",") if o != "relatime")
            rows.append(f"{f[4]} {fstype} {opts}")
        return "\n".join(sorted(rows))
    if name == "dev":  # drop sizes, dates and link counts
        return "\n".join(re.sub(r"^(\S+)\s+\d+\s+(\S+)\s+(\S+)\s+[\d, ]+\s+\w{3}\s+\d+\s+[\d:]+\s+",
                                r"\1 \2 \3 ", line) for line in text.splitlines()
                         if not line.startswith("total"))
    return text


@pytest.fixture
def runc(tmp_path):
    rt = Runtime(shutil.which("runc"), str(tmp_path / "runc-state"))
    yield rt
    rt.cleanup()


@pytest.mark.parametrize("name", sorted(PROBES))
def test_same_view_as_runc(name, ocirt, runc, bundle):
    def edit(config):
        config["linux"]["sysctl"] = {"kernel.domainname": "example.org"}
        config["process"]["user"]["additionalGids"] = [5]
        config["process"]["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 0})
        config["linux"].pop("resources", None)
    b = bundle(["sh", "-c", PROBES[name]], edit=edit)
    theirs = runc("run", "--bundle", b, "parity-runc")
    ours = ocirt("run", "--bundle", b, "parity-ocirt")
    assert theirs.rc == 0, theirs
    assert ours.rc == 0, ours
    assert normalize(name, ours.out) == normalize(name, theirs.out)
