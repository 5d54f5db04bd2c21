"""`terminal: true` in the foreground with no --console-socket needs a terminal of ours
to relay: without one (no tty on stdio, no controlling terminal) runc refuses with
`open /dev/tty: no such device or address`, and so must ocirt, instead of starting an
interactive shell that nobody can reach (or one reading from the caller's terminal)."""

from __future__ import annotations

import os
import shutil

import pytest

from conformance.runner import Runtime
from tests.conftest import IN_CHROOT
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

HAVE_RUNC = shutil.which("runc") is not None and not IN_CHROOT


def _detached(rt: Runtime) -> Runtime:
    """The same runtime started by `setsid -w`: a new session without a controlling
    terminal; stdin is /dev/null and stdout/stderr are files (conformance.runner)."""
    return Runtime(rt.binary, rt.root, prefix=lambda cwd: ["setsid", "-w"])


def _runtimes(ocirt, tmp_path) -> list[Runtime]:
    found = [ocirt]
    if HAVE_RUNC:
        found.append(Runtime(shutil.which("runc"), str(tmp_path / "runc-state")))
    return found


def test_run_without_any_terminal_is_refused_like_runc(ocirt, bundle, tmp_path):
    b = bundle(["touch", "/ran"], edit=lambda c: c["process"].update(terminal=True))
    for rt in _runtimes(ocirt, tmp_path):
        r = _detached(rt)("run", "--bundle", b, "t1", timeout=30)
        assert r.rc == 1, (rt.name, r)
        assert "open /dev/tty: no such device or address" in r.err, (rt.name, r)
        assert "Traceback" not in r.err and r.err.strip().count("\n") == 0, r
        assert not os.path.exists(os.path.join(b, "rootfs", "ran")), f"{rt.name} ran it"
        assert_nothing_left(rt.root, "t1", b)


def test_exec_tty_without_any_terminal_is_refused_like_runc(ocirt, bundle, tmp_path):
    for rt in _runtimes(ocirt, tmp_path):
        rt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "t2", check=True)
        try:
            r = _detached(rt)("exec", "-t", "t2", "sh", "-c", "touch /exec-ran", timeout=30)
            assert r.rc == 255, (rt.name, r)
            assert "open /dev/tty: no such device or address" in r.err, (rt.name, r)
            ls = rt("exec", "t2", "ls", "/")
            assert "exec-ran" not in ls.out.split(), f"{rt.name} ran the process"
        finally:
            rt("delete", "--force", "t2")
