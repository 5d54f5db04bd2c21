"""`run`: foreground exit status, --detach, --keep, signal forwarding."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conformance.runner import wait_for

pytestmark = pytest.mark.root


@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 7", 7), ("kill -9 $$", 137),
                                          ("kill -TERM $$", 143)])
def test_exit_status(ocirt, bundle, script, code):
    # `sh -c` as PID 1 ignores SIGTERM sent to itself; a subshell is an ordinary process.
    b = bundle(["sh", "-c", f"( {script} ); exit $?"] if "kill" not in script
               else ["sh", "-c", f"sh -c '{script}'; exit $?"])
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == code, r
    assert ocirt.ids() == []


def test_keep_leaves_a_stopped_container(ocirt, bundle):
    r = ocirt("run", "--keep", "--bundle", bundle(["true"]), "c1")
    assert r.rc == 0
    assert ocirt.state("c1")["status"] == "stopped"
    ocirt("delete", "c1", check=True)


def test_detach_returns_at_once(ocirt, bundle, tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    ocirt("run", "-d", "--pid-file", str(pidfile), "--bundle", bundle(["sleep", "100"]), "c1",
          check=True)
    assert time.monotonic() - t0 < 10
    assert ocirt.state("c1")["status"] == "running"
    assert int(pidfile.read_text()) == ocirt.state("c1")["pid"]
    ocirt("delete", "--force", "c1", check=True)


def test_signals_are_forwarded(ocirt_bin, bundle, state_root):
    b = bundle(["sh", "-c", "trap 'echo got-usr1; exit 42' USR1; echo ready; "
                            "while :; do sleep 0.1; done"])
    proc = subprocess.Popen([ocirt_bin, "--root", state_root, "run", "--bundle", b, "c1"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(10) == 42
        assert "got-usr1" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert wait_for(lambda: not os.path.exists(os.path.join(state_root, "c1")))


def test_container_stdio_is_the_runtimes(ocirt_bin, bundle, state_root):
    b = bundle(["sh", "-c", "read line; echo \"out:$line\"; echo err >&2"])
    r = subprocess.run([ocirt_bin, "--root", state_root, "run", "--bundle", b, "c1"],
                       input="hello\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert r.stdout == "out:hello\n" and r.stderr == "err\n"
