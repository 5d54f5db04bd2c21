"""containerd's checkpoint through its runc shim (io.containerd.runc.v2) with ocirt as
the shim's runtime binary: `ctr task checkpoint` pauses the task, has the shim call
`ocirt checkpoint --image-path I --work-path W [--leave-running] ID`, resumes it, and
stores CRIU's images as a checkpoint image in containerd's content store. A wrapper of
the ocirt binary records every call the shim makes, so the test sees the runc call
pattern as well as its effect: the counting container goes on counting after a
checkpoint that leaves it running, and stops after `--exit`.

Runs where CRIU works and containerd is installed (the test-host guest).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from conformance.runner import wait_for
from tests.checkpoint.helpers import COUNTER, needs_criu
from tests.checkpoint.helpers import numbers as _numbers
from tests.engines.test_containerd_systemd_host import ctr  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.root, needs_criu,
              pytest.mark.skipif(shutil.which("containerd") is None, reason="no containerd")]


@pytest.fixture
def logged_ocirt(tmp_path, ocirt_bin):
    """A wrapper of ocirt that appends each argv it is called with to a log."""
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "ocirt-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{log}\nexec {ocirt_bin} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def _start(ctr, bundle, tmp_path, binary: str, name: str) -> str:  # noqa: F811
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    out = tmp_path / f"out-{name}"
    out.mkdir()
    # fifos for stdio (no --null-io): the init's stdio are the shim's pipes, which CRIU
    # dumps, where the host's /dev/null would be a file outside the container
    r = ctr("run", "--detach", "--rootfs", "--runc-binary", binary,
            "--mount", f"type=bind,src={out},dst=/out,options=rbind:rw",
            rootfs, name, *COUNTER)
    assert r.returncode == 0, r.stderr
    count = str(out / "count")
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=60), _numbers(count)
    return count


def _calls(log, verb: str) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines() if f" {verb} " in line]


def test_ctr_task_checkpoint_leaves_it_counting(ctr, bundle, tmp_path,  # noqa: F811
                                                logged_ocirt):
    binary, log = logged_ocirt
    name = f"ckpt-{os.getpid()}"
    count = _start(ctr, bundle, tmp_path, binary, name)
    r = ctr("tasks", "checkpoint", name)
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    print("ctr tasks checkpoint:", r.stdout.strip())
    print("calls:", log.read_text())
    (call,) = _calls(log, "checkpoint")
    assert "--leave-running" in call and "--image-path" in call and "--work-path" in call
    assert _calls(log, "pause") and _calls(log, "resume"), log.read_text()
    images = ctr("images", "list").stdout
    print("images:", images)
    assert "checkpoint" in images, images
    before = len(_numbers(count))
    assert wait_for(lambda: len(_numbers(count)) >= before + 5, timeout=60), "stopped"
    assert " RUNNING" in ctr("tasks", "list").stdout


def test_ctr_task_checkpoint_exit_stops_it(ctr, bundle, tmp_path, logged_ocirt):  # noqa: F811
    binary, log = logged_ocirt
    name = f"ckptx-{os.getpid()}"
    count = _start(ctr, bundle, tmp_path, binary, name)
    r = ctr("tasks", "checkpoint", "--exit", name)
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    print("calls:", log.read_text())
    (call,) = _calls(log, "checkpoint")
    assert "--leave-running" not in call
    assert wait_for(lambda: "RUNNING" not in ctr("tasks", "list").stdout, timeout=60)
    stopped_at = len(_numbers(count))
    time.sleep(1)
    assert len(_numbers(count)) == stopped_at
    assert "checkpoint" in ctr("images", "list").stdout
    # what this ctr offers to bring it back (a container-level restore needs an image)
    for args in (("containers", "restore", "--help"), ("run", "--help"),
                 ("tasks", "start", "--help")):
        print(args, ctr(*args).stdout[-1500:])
