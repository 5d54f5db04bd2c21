"""kill: signals reach the container process; forbidden targets fail without effect."""

from __future__ import annotations

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

# The init traps the signals it is sent and reports them; it is pid 1 of its pid
# namespace, so without a handler the kernel would drop them.
TRAP = ("for s in TERM USR1 HUP INT; do trap \"echo got-$s\" $s; done; echo ready; "
        "while :; do sleep 0.05; done")


def _trapping(h):
    c = h.start(h.bundle(["sh", "-c", TRAP]))
    c.wait_output("ready")
    return c


@case("KL-01", "runc: kill", "RUNC")
def test_default_signal_is_term(h):
    """kill without a signal sends SIGTERM"""
    c = _trapping(h)
    assert h.rt("kill", c.cid).ok
    c.wait_output("got-TERM")


@pytest.mark.parametrize("spelling", ["USR1", "SIGUSR1", "10", "HUP", "SIGINT"])
@case("KL-02", "runtime.md#kill", "MUST")
def test_signal_delivered(h, spelling):
    """kill sends the named or numbered signal to the container process"""
    c = _trapping(h)
    c.kill(spelling)
    name = {"10": "USR1", "SIGUSR1": "USR1", "SIGINT": "INT"}.get(spelling, spelling)
    c.wait_output(f"got-{name}")
    assert c.status() == "running"


@case("KL-03", "runtime.md#kill", "MUST")
def test_kill_running(h):
    """KILL stops a running container"""
    c = h.start(h.bundle(["sleep", "100"]))
    c.kill("KILL")
    c.wait_stopped()
    assert procfs.wait_gone(c.pid, 5)


@case("KL-04", "runtime.md#kill", "MUST")
def test_kill_created(h):
    """KILL may be sent to a created container and stops it"""
    c = h.create(h.bundle(["sleep", "100"]))
    c.kill("KILL")
    c.wait_stopped()
    assert procfs.wait_gone(c.pid, 5)


@case("KL-05", "runtime.md#kill", "MUST")
def test_kill_stopped_fails(h):
    """kill on a stopped container fails and it stays stopped"""
    c = h.start(h.bundle(["true"]))
    c.wait_stopped()
    assert c.kill("KILL", check=False).rc != 0
    assert c.status() == "stopped"


@case("KL-06", "runtime.md#kill", "MUST")
def test_kill_unknown_fails(h):
    """kill of an unknown container fails"""
    assert h.rt("kill", h.cid(), "KILL").rc != 0


_CRUN_NAMES = deviation("crun", "crun 1.8.1 exits 0 for an unknown signal name")


@pytest.mark.parametrize("sig", [pytest.param("NOSUCHSIG", marks=_CRUN_NAMES),
                                 pytest.param("SIGFOO", marks=_CRUN_NAMES), "99999", "-1"])
@case("KL-07", "runtime.md#kill", "RUNC")
def test_invalid_signal_fails(h, sig):
    """kill with an invalid signal fails and leaves the container running"""
    c = h.start(h.bundle(["sleep", "100"]))
    assert c.kill(sig, check=False).rc != 0
    assert c.status() == "running" and procfs.alive(c.pid)


@needs("cgroups")
@case("KL-08", "runc: kill --all", "RUNC")
def test_kill_all(h):
    """kill --all signals every process of the container, not only its init"""
    script = "trap 'echo init-got-TERM' TERM; sleep 1000 & sleep 1000 & echo ready; " \
             "while :; do sleep 0.05; done"
    c = h.start(h.bundle(["sh", "-c", script]))
    c.wait_output("ready")
    assert wait_for(lambda: len(_sleepers(c.pid)) == 2, 5), procfs.children(c.pid)
    sleepers = _sleepers(c.pid)
    c.kill("TERM", "--all")
    c.wait_output("init-got-TERM")
    for pid in sleepers:
        assert procfs.wait_gone(pid, 5), f"background process {pid} survived kill --all"


def _sleepers(pid):
    kids = [k for k in procfs.children(pid) if procfs.alive(k)]
    return [k for k in kids if procfs.cmdline(k)[:2] == ["sleep", "1000"]]


@case("KL-09", "runtime.md#kill", "MUST")
def test_kill_does_not_start(h):
    """a signal to a created container does not run the user program"""
    c = h.create(h.bundle(["sh", "-c", "echo program-ran; sleep 1000"]))
    c.kill("KILL")
    c.wait_stopped()
    assert "program-ran" not in c.output()


@case("KL-10", "config-linux.md#namespaces pid", "MUST")
def test_kill_init_ends_all(h):
    """killing the init of a container with a pid namespace ends all its processes"""
    c = h.start(h.bundle(["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"]))
    c.wait_output("ready")
    assert wait_for(lambda: len(_sleepers(c.pid)) == 2, 5), procfs.children(c.pid)
    sleepers = _sleepers(c.pid)
    c.kill("KILL")
    c.wait_stopped()
    for pid in sleepers:
        assert procfs.wait_gone(pid, 5), f"process {pid} outlived the container's init"
