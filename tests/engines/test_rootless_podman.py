"""Rootless podman with ocirt: an unprivileged user with the contrib drop-in in
~/.config/containers/containers.conf.d/ runs a container through ocirt. Podman runs the
runtime as uid 0 of its user namespace, so this is where the state root must follow
XDG_RUNTIME_DIR (a PermissionError on /run/ocirt/<id> before)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import pytest

from conformance.bundle import make_rootfs
from tests.conftest import IN_CHROOT, user_runnable_ocirt
from tests.leaks import mounts_under

USER = "ocirt-test"
CONTRIB = os.path.join(os.path.dirname(__file__), "..", "..", "contrib")

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(IN_CHROOT, reason="the kernel refuses user namespaces to "
                                                   "a process in a chroot"),
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")]


@pytest.fixture
def user_podman(ocirt_bin):
    """podman as the test user, with the drop-in where the contrib file says it goes (the
    binary path pointed at the ocirt under test), private HOME and XDG_RUNTIME_DIR (short:
    podman refuses long runroots); its pause process is ended and its files removed."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no {USER} user (contrib/setup.sh creates it)")
    ocirt_bin = user_runnable_ocirt(ocirt_bin, USER)
    top = tempfile.mkdtemp(prefix="ocirt-up-")
    home, runtime_dir = os.path.join(top, "home"), os.path.join(top, "run")
    dropin = os.path.join(home, ".config", "containers", "containers.conf.d")
    os.makedirs(dropin)
    os.makedirs(runtime_dir, 0o700)
    with open(os.path.join(CONTRIB, "podman", "ocirt.conf")) as f:
        text = f.read().replace('["/usr/local/bin/ocirt", "/usr/bin/ocirt"]', f'["{ocirt_bin}"]')
    assert ocirt_bin in text
    with open(os.path.join(dropin, "ocirt.conf"), "w") as f:
        f.write(text)
    rootfs = make_rootfs(os.path.join(top, "rootfs"))
    subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", top], check=True)
    env = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", f"USER={USER}",
           f"XDG_RUNTIME_DIR={runtime_dir}"]

    def run(*args: str) -> subprocess.CompletedProcess:
        # This host's hard RLIMIT_NOFILE is 20000: podman's default ulimits cannot be set.
        return subprocess.run(["runuser", "-u", USER, "--", *env, "podman", "--storage-driver",
                               "vfs", "--events-backend", "file", *args],
                              capture_output=True, text=True, timeout=120, cwd=top,
                              stdin=subprocess.DEVNULL)
    try:
        yield run, rootfs, runtime_dir
    finally:
        pause = os.path.join(runtime_dir, "libpod", "tmp", "pause.pid")
        if os.path.exists(pause):
            with open(pause) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        leaked = mounts_under(top)
        shutil.rmtree(top, ignore_errors=True)
        assert leaked == []


def test_rootless_podman_runs_ocirt_from_the_drop_in(user_podman):
    run, rootfs, runtime_dir = user_podman
    r = run("--runtime", "ocirt", "run", "--rm", "--network", "none", "--ulimit",
            "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--rootfs", rootfs,
            "/bin/echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    assert "ocirt" not in r.stderr, r.stderr  # no error or warning of ours
    state_root = os.path.join(runtime_dir, "ocirt")
    assert oct(os.stat(state_root).st_mode & 0o7777) == "0o1700"  # runc's mode
    assert [n for n in os.listdir(state_root) if not n.startswith("@")] == []  # --rm deleted it


def test_rootless_podman_container_sees_its_user_namespace(user_podman):
    """What the process sees: root inside, which is the test user outside (podman maps
    the user's subordinate ids after it, through newuidmap)."""
    run, rootfs, runtime_dir = user_podman
    r = run("--runtime", "ocirt", "run", "--rm", "--network", "none", "--ulimit",
            "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--rootfs", rootfs,
            "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(pwd.getpwnam(USER).pw_uid), "1"], r.stdout
