"""podman's `container checkpoint` / `restore` (and `--export` to a tarball) with ocirt
as its runtime, through the contrib snippet: podman drives `ocirt checkpoint` and conmon
`ocirt restore --detach`; the counting container must go on from where it stopped.
`restore --import` needs a container made from an image (podman cannot import a
checkpoint of a `--rootfs` container, whatever the runtime: "repository name must have
at least one component"), so that test imports the busybox rootfs as a local image first
(the guest has no network).

Runs where CRIU works (the test-host guest); podman's own storage and run roots are
private to the test and removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from conformance.runner import wait_for
from tests.checkpoint.helpers import COUNTER, needs_criu
from tests.checkpoint.helpers import numbers as _numbers

CONTRIB = os.path.join(os.path.dirname(__file__), "..", "..", "contrib")

pytestmark = [pytest.mark.root, needs_criu,
              pytest.mark.skipif(shutil.which("podman") is None, reason="no podman")]


@pytest.fixture
def podman(tmp_path, ocirt_bin):
    with open(os.path.join(CONTRIB, "podman", "ocirt.conf")) as f:
        text = f.read().replace('["/usr/local/bin/ocirt", "/usr/bin/ocirt"]', f'["{ocirt_bin}"]')
    assert ocirt_bin in text
    conf = tmp_path / "containers.conf"
    conf.write_text(text)
    short = tempfile.mkdtemp(prefix="ocirt-pm-")  # podman's runroot must be short
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONTAINERS_CONF": str(conf),
           "HOME": str(tmp_path)}
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", short,
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend",
            "file", "--runtime", "ocirt"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args], capture_output=True, text=True, env=env,
                              timeout=300, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    # podman's cgroupfs manager makes these and never removes them
    made = [d for d in PODMAN_CGROUPS if not os.path.isdir(d)]
    yield run
    run("rm", "--all", "--force", check=False)
    subprocess.run(["umount", "-R", str(tmp_path / "storage")], capture_output=True)
    shutil.rmtree(short, ignore_errors=True)
    for d in made:  # deepest first
        if os.path.isdir(d):
            os.rmdir(d)


PODMAN_CGROUPS = ("/sys/fs/cgroup/libpod_parent/conmon", "/sys/fs/cgroup/libpod_parent")


def test_podman_checkpoint_restore_and_export(podman, bundle, tmp_path):
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    out = tmp_path / "out"
    out.mkdir()
    count = str(out / "count")
    podman("run", "-d", "--name", "pm1", "--network", "none", "-v", f"{out}:/out",
           "--ulimit", "nofile=1024:1024", "--rootfs", rootfs, *COUNTER)
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=60)
    podman("container", "checkpoint", "pm1")
    stopped_at = _numbers(count)
    assert "Exited" in podman("ps", "-a", "--format", "{{.Status}}").stdout
    podman("container", "restore", "pm1")
    assert "Up" in podman("ps", "--format", "{{.Status}}").stdout
    assert wait_for(lambda: len(_numbers(count)) >= len(stopped_at) + 3, timeout=60)
    after = _numbers(count)[len(stopped_at):]
    assert after[0] == stopped_at[-1] + 1, (stopped_at[-3:], after[:3])
    # exported to a tarball: CRIU's images and the config, podman's layout
    tarball = str(tmp_path / "pm1.tar")
    podman("container", "checkpoint", "--export", tarball, "--compress", "none", "pm1")
    names = [n.removeprefix("./") for n in subprocess.run(
        ["tar", "tf", tarball], capture_output=True, text=True, check=True).stdout.split()]
    assert "checkpoint/pstree.img" in names and "checkpoint/descriptors.json" in names, names
    assert "config.dump" in names, names
    exported_at = _numbers(count)
    assert "Exited" in podman("ps", "-a", "--format", "{{.Status}}").stdout
    podman("container", "restore", "pm1")
    assert wait_for(lambda: len(_numbers(count)) >= len(exported_at) + 3, timeout=60)
    again = _numbers(count)[len(exported_at):]
    assert again[0] == exported_at[-1] + 1, (exported_at[-3:], again[:3])


def test_podman_export_remove_and_import(podman, bundle, tmp_path):
    """Checkpointed to a tarball, the container removed, `restore --import` makes it
    again from the tarball and it counts on from where it stopped."""
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    layer = str(tmp_path / "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", layer, "."], check=True)
    podman("import", layer, "localhost/ocirt-ckpt:latest")
    out = tmp_path / "out"
    out.mkdir()
    count = str(out / "count")
    podman("run", "-d", "--name", "pm2", "--network", "none", "-v", f"{out}:/out",
           "--ulimit", "nofile=1024:1024", "localhost/ocirt-ckpt:latest", *COUNTER)
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=60)
    tarball = str(tmp_path / "pm2.tar")
    podman("container", "checkpoint", "--export", tarball, "--compress", "none", "pm2")
    exported_at = _numbers(count)
    podman("rm", "pm2")
    assert "pm2" not in podman("ps", "-a", "--format", "{{.Names}}").stdout
    podman("container", "restore", "--import", tarball)
    assert "Up" in podman("ps", "--filter", "name=pm2", "--format", "{{.Status}}").stdout
    assert podman("inspect", "--format", "{{.OCIRuntime}}", "pm2").stdout.strip() == "ocirt"
    assert wait_for(lambda: len(_numbers(count)) >= len(exported_at) + 3, timeout=60)
    again = _numbers(count)[len(exported_at):]
    assert again[0] == exported_at[-1] + 1, (exported_at[-3:], again[:3])
