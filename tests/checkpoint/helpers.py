"""What the checkpoint tests share: the counting container, whether CRIU works here, and
changing one byte of a checkpoint object in a SIF."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conformance.runner import Runtime

COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i >>/out/count; sleep 0.1; done"]


def _criu_works() -> tuple[bool, str]:
    criu = shutil.which("criu")
    if criu is None:
        return False, "criu is not installed"
    done = subprocess.run([criu, "check"], capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]
        return False, f"criu check fails on this kernel: {(errors or ['?'])[0].strip()}"
    return True, ""


CRIU_OK, CRIU_WHY = _criu_works()
needs_criu = pytest.mark.skipif(not CRIU_OK, reason=CRIU_WHY or "criu works")


def _lazy_pages_work() -> bool:
    """CRIU's own check of non-cooperative userfaultfd (what --lazy-pages needs)."""
    return CRIU_OK and subprocess.run(
        [shutil.which("criu") or "criu", "check", "--feature", "uffd-noncoop"],
        capture_output=True).returncode == 0


needs_lazy_pages = pytest.mark.skipif(
    not _lazy_pages_work(), reason=CRIU_WHY or "criu check --feature uffd-noncoop fails "
    "(no userfaultfd for CRIU here)")


def numbers(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def run_detached(rt: Runtime, cid: str, bundle: str) -> None:
    # stdio is /dev/null: the runtime points it at the container's own /dev/null, which
    # CRIU can dump (a host file outside the container could not be)
    with open(os.devnull, "wb") as null:
        rt("run", "-d", "--bundle", bundle, cid, check=True, stdout=null, stderr=null)




def tamper(sif: str, name: str) -> None:
    """Flip the first byte of the checkpoint object criu/`name` in `sif` (its
    descriptor, and so the signed digest's input, stays as it was)."""
    from ocirt.sif import checkpoint as sifcp
    from ocirt.sif.format import DataType
    from ocirt.sif.image import Image

    with Image.open(sif) as image:
        offset = image.find(DataType.GENERIC, sifcp.PREFIX + name)[0].offset
    with open(sif, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def root_can_be_made_slave() -> bool:
    """Whether a new mount namespace here can make / a slave (EINVAL in a chroot, where
    restore refuses: CRIU needs a mount namespace of its own)."""
    import sys

    probe = ("import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
             "sys.exit(libc.unshare(0x20000) or libc.mount(None, b'/', None, "
             "0x4000 | 0x80000, None))")
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0
