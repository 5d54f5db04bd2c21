"""A container's running state carried from one boot to another inside its SIF image.

The test boots the test-host guest (tests/hosts) twice: boot 1 checkpoints a counting
container into a signed SIF and hands the file out (`--keep`); boot 2 gets it as a
read-only share, copies it, refuses a tampered copy, restores the copy under a new
state root and sees the counter go on (tests/checkpoint/migrate.py is both halves).
Neither boot runs contrib/setup.sh: the image has every package it installs, and a
launcher made from the checkout stands in for the venv.

Two boots take minutes under TCG, so the test runs only when asked for with
OCIRT_HOSTS_BOOT=1 (.ci/run does, after its guest step), never by a plain
`pytest` of the host suite, and never inside the guest itself.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.environ.get("OCIRT_HOSTS_BOOT") != "1",
    reason="boots the test-host guest twice (minutes): set OCIRT_HOSTS_BOOT=1 to run it")]

LAUNCHER = "/usr/local/bin/ocirt"  # where contrib/setup.sh puts it (/run is noexec)


def _boot(phase: str, directory: str, **kw) -> str:
    """One boot running one half of tests/checkpoint/migrate.py; its output."""
    from tests import hosts

    command = (f"python3 -m ocirt.launcher {LAUNCHER} && "
               f"python3 -m tests.checkpoint.migrate {phase} {LAUNCHER} {directory}")
    started = time.monotonic()
    result = hosts.run(hosts.KINDS["debian12-v2"], command, timeout=1200, **kw)
    assert result.rc == 0 and not result.note, (phase, result.rc, result.output[-3000:],
                                                result.note[-3000:])
    print(f"boot for {phase}: {time.monotonic() - started:.0f} s")
    return result.output


def test_restored_on_another_boot_from_a_copied_sif(tmp_path):
    handed = tmp_path / "boot1"
    out = _boot("checkpoint", '"$OCIRT_HOST_OUT"', keep=str(handed))
    assert "migrate: checkpointed" in out, out
    for name in ("app.sif", "key.pub", "count", "stopped.json"):
        assert (handed / name).is_file(), sorted(os.listdir(handed))
    out = _boot("restore", f"/mnt/shares/{handed.name}", shares=[str(handed)])
    assert "migrate: tampered copy refused; restored" in out, out
