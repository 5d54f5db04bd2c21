"""A protection that cannot be set up fails closed, with one line naming what is missing.

The failures are forced for real, without touching a host sysctl: the runtime runs under
a seccomp filter installed in its own process (inherited by everything it forks), which
refuses the one syscall a protection needs, the way vm.memfd_noexec, a hardened
profile or an LSM would refuse it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ocirt.process import trampoline
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

EACCES, EPERM = 13, 1


def _filter(rules: list[dict]) -> object:
    from ocirt.seccomp import compile_filter

    return compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})


def run_filtered(ocirt, rules: list[dict], *args: str) -> subprocess.CompletedProcess:
    """The runtime command under a seccomp filter that refuses what `rules` name."""
    filt = _filter(rules)
    return subprocess.run(ocirt.cmd(*args), preexec_fn=filt.install, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def _refuse(name: str, errno_ret: int, **arg0: int) -> dict:
    rule = {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret}
    if arg0:
        rule["args"] = [{"index": 0, "value": arg0["value"], "op": "SCMP_CMP_EQ"}]
    return rule


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


def test_unknown_architecture_is_refused_by_name():
    with pytest.raises(trampoline.TrampolineError, match="sparc64 architecture"):
        trampoline.sealed_fd("sparc64")


def test_no_executable_memfd_refuses_the_container(ocirt, bundle):
    """vm.memfd_noexec=2 refuses memfd_create(MFD_EXEC) with EACCES: no container starts
    from the host interpreter instead."""
    b = bundle(["true"])
    r = run_filtered(ocirt, [_refuse("memfd_create", EACCES)], "run", "--bundle", b, "c1")
    assert r.returncode == 1, r
    line = _one_line(r.stderr)
    assert "sealed init trampoline" in line and "memfd_create" in line, line
    assert "permission denied" in line, line
    assert_nothing_left(ocirt.root, "c1", b)


def test_trampoline_that_cannot_be_executed_refuses_the_container(ocirt, bundle):
    """The memfd is made but its execve is refused (execveat by fd, and no /proc to go
    through instead): `create` fails with the reason, before anything reports success."""
    def edit(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"]
        cfg["linux"].pop("maskedPaths", None)
        cfg["linux"].pop("readonlyPaths", None)
    b = bundle(["true"], edit=edit)
    r = run_filtered(ocirt, [_refuse("execveat", EACCES)], "create", "--bundle", b, "c1")
    assert r.returncode == 1, r
    line = _one_line(r.stderr)
    assert "sealed init trampoline (executing it: permission denied)" in line, line
    assert_nothing_left(ocirt.root, "c1", b)


def test_a_profile_refusing_execveat_still_runs_through_procfs(ocirt, bundle):
    """The container's own seccomp profile may refuse execveat: the trampoline is then
    exec'd through /proc/self/fd, and the process runs."""
    def edit(cfg):
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [_refuse("execveat", EPERM)]}
    r = ocirt("run", "--bundle", bundle(["echo", "ran"], edit=edit), "c1")
    assert r.rc == 0 and r.out == "ran\n", r


def test_created_init_is_the_trampoline_even_with_start_container_hooks(ocirt, bundle):
    """With startContainer hooks the init used to wait for `start` as Python; now it is
    the sealed trampoline, and `start` runs the hooks inside the container."""
    def edit(cfg):
        cfg["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", "cat > /hook-state; echo $$ > /hook-pid"]}]}
    b = bundle(["sh", "-c", "cat /hook-state"], edit=edit)
    assert ocirt("create", "--bundle", b, "c1").rc == 0
    pid = ocirt.state("c1")["pid"]
    assert os.readlink(f"/proc/{pid}/exe").startswith("/memfd:ocirt-init")
    assert ocirt("start", "c1").rc == 0
    assert ocirt.wait_status("c1", "stopped")
    rootfs = os.path.join(b, "rootfs")
    with open(os.path.join(rootfs, "hook-state")) as f:
        assert '"status": "created"' in f.read().replace('":"', '": "')
    with open(os.path.join(rootfs, "hook-pid")) as f:
        assert int(f.read()) > 1  # a process in the container's pid namespace
    assert ocirt("delete", "c1").rc == 0


def test_no_way_to_stay_non_dumpable_refuses_the_container(ocirt, bundle):
    """prctl(PR_SET_DUMPABLE) refused: the setup processes could be ptraced from the
    container before they exec (CVE-2016-9962)."""
    b = bundle(["true"])
    r = run_filtered(ocirt, [_refuse("prctl", EPERM, value=4)], "run", "--bundle", b, "c1")
    assert r.returncode == 1, r
    line = _one_line(r.stderr)
    assert "non-dumpable" in line and "PR_SET_DUMPABLE" in line, line
    assert_nothing_left(ocirt.root, "c1", b)


def test_sysctls_fall_back_to_a_clone_of_procfs(ocirt, bundle):
    """No new procfs instance (fsopen refused): the sysctl is written through a detached
    clone of the container's procfs mount."""
    def edit(cfg):
        cfg["linux"]["sysctl"] = {"kernel.domainname": "fallback.example"}
    b = bundle(["cat", "/proc/sys/kernel/domainname"], edit=edit)
    r = run_filtered(ocirt, [_refuse("fsopen", EPERM)], "run", "--bundle", b, "c1")
    assert r.returncode == 0 and r.stdout == "fallback.example\n", r


def test_sysctls_without_a_private_procfs_refuse_the_container(ocirt, bundle):
    """Neither a new procfs nor a clone: the sysctls are not written through the
    container's /proc path (CVE-2025-52881), the container is refused."""
    def edit(cfg):
        cfg["linux"]["sysctl"] = {"kernel.domainname": "never.example"}
    b = bundle(["true"], edit=edit)
    r = run_filtered(ocirt, [_refuse("fsopen", EPERM), _refuse("open_tree", EPERM)],
                     "run", "--bundle", b, "c1")
    assert r.returncode == 1, r
    line = _one_line(r.stderr)
    assert "no private procfs" in line and "kernel.domainname" not in line, line
    assert_nothing_left(ocirt.root, "c1", b)
