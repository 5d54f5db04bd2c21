"""Fixtures of the exec tests."""

from __future__ import annotations

import shutil

import pytest

from conformance.runner import Runtime
from tests.conftest import IN_CHROOT

HAVE_RUNC = shutil.which("runc") is not None and not IN_CHROOT


@pytest.fixture
def runtimes(ocirt, bundle, tmp_path):
    """(runtime, container id) pairs, each with a running `sleep` container: ocirt's,
    and runc's beside it where runc can run."""
    pairs = [(ocirt, "c1")]
    runc = Runtime(shutil.which("runc") or "runc", str(tmp_path / "runc-state"))
    if HAVE_RUNC:
        pairs.append((runc, "r1"))
    for rt, cid in pairs:
        rt("run", "-d", "--bundle", bundle(["sleep", "1000"]), cid, check=True)
    yield pairs
    runc.cleanup()
