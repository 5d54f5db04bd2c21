"""Fixtures of the checkpoint tests: the runtime (ocirt, or runc as the reference) and
the counting container's bundle."""

from __future__ import annotations

import shutil

import pytest

from conformance.runner import Runtime
from tests.checkpoint.helpers import COUNTER


@pytest.fixture(params=["ocirt", "runc"])
def runtime(request, ocirt, tmp_path):
    """The runtime under test: ocirt, or runc as the reference."""
    if request.param == "ocirt":
        return ocirt
    if shutil.which("runc") is None:
        pytest.skip("runc not installed")
    rt = Runtime(shutil.which("runc"), str(tmp_path / "runc-state"))
    request.addfinalizer(rt.cleanup)
    return rt


@pytest.fixture
def counter(bundle, tmp_path):
    """A bundle whose process counts into out/count (a bind mount of a host directory)."""
    out = tmp_path / "out"
    out.mkdir()

    def edit(cfg):
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                              "options": ["rbind", "rw"]})
    return bundle(COUNTER, edit=edit), str(out / "count")
