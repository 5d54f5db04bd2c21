"""Slurm as a real client: `srun --container=BUNDLE` through contrib/slurm/oci.conf on a
one-node cluster of the test's own (tests/slurm/cluster.py), as an unprivileged user.

The oci.conf used is the contrib file itself, with two substitutions a site would not
need: the ocirt under test instead of `ocirt` on PATH, and the cluster's directory
instead of /run/user (which only systemd-logind creates).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from conformance.bundle import make_rootfs
from tests.conftest import IN_CHROOT, REPO
from tests.leaks import processes_naming, processes_rooted_in
from tests.slurm.cluster import NODE, Cluster, missing_tools

USER = "ocirt-test"
CONTRIB = os.path.join(REPO, "contrib", "slurm", "oci.conf")
FIXTURES = os.path.join(REPO, "..", "shared", "fixtures", "sif")
SIGNED = "a-minimal-busybox-signed-dsse-ecdsa-p256.sif"
UNSIGNED = "a-minimal-busybox.sif"
KEY = os.path.join(FIXTURES, "keys", "ecdsa-p256-public.pem")

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(IN_CHROOT, reason="the kernel refuses user namespaces to "
                                                   "a process in a chroot")]


def oci_conf(ocirt_bin: str, cluster: Cluster, run_flags: str = "") -> str:
    """contrib/slurm/oci.conf pointed at the ocirt under test and the cluster's /run."""
    with open(CONTRIB) as f:
        text = f.read()
    text = text.replace('="ocirt ', f'="{ocirt_bin} ').replace('="exec ocirt ',
                                                               f'="exec {ocirt_bin} ')
    text = text.replace("/run/user/", cluster.path("run") + "/")
    if run_flags:
        text = text.replace(" run %n", f" run {run_flags} %n")
    return text


@pytest.fixture(scope="module")
def cluster(ocirt_bin):
    missing = missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (.ci/run installs slurmctld, "
                    "slurmd, slurm-client, munge)")
    try:
        c = Cluster(USER)
    except KeyError:
        pytest.skip(f"no {USER} user (.ci/run creates it)")
    if subprocess.run(["runuser", "-u", USER, "--", "test", "-x", ocirt_bin]).returncode:
        pytest.skip(f"{USER} cannot run {ocirt_bin} (checkout in a root-only directory)")
    try:
        c.start()
        yield c
    finally:
        leaked = c.stop()
        c.remove()
        assert leaked == [], f"mounts left: {leaked}"


@pytest.fixture
def configure(cluster, ocirt_bin):
    """Write oci.conf (slurmstepd reads it for every step) and check, after the test, that
    no container, spool directory, mount or process of the job is left."""
    def write(run_flags: str = "") -> None:
        with open(os.path.join(os.path.dirname(cluster.conf), "oci.conf"), "w") as f:
            f.write(oci_conf(ocirt_bin, cluster, run_flags))
    write()
    yield write
    assert wait_for(lambda: not cluster.jobs()), f"jobs left: {cluster.jobs()}"
    state_root = cluster.path("run", str(cluster.user.pw_uid), "ocirt")
    left = os.listdir(state_root) if os.path.isdir(state_root) else []
    assert left == [], f"containers left in {state_root}: {left}"
    spool = [n for n in os.listdir(cluster.path("spool")) if n.startswith("oci-job")]
    assert spool == [], f"step spool directories left: {spool}"
    assert cluster.mounts() == []
    assert wait_for(lambda: not live(processes_naming(f"{NODE}.{USER}."))), \
        [cmdline(p) for p in live(processes_naming(f"{NODE}.{USER}."))]


def wait_for(cond, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def live(pids: list[int]) -> list[int]:
    """Those not zombies (a daemonized FUSE server's zombie waits for init to reap it)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(pid)
        except OSError:
            continue
    return out


def user_bundle(cluster: Cluster, ocirt_bin: str, name: str, root: str | None = None) -> str:
    """A rootless bundle owned by the user: busybox, or (`root`) a SIF image as rootfs."""
    bundle = cluster.path(name)
    os.mkdir(bundle)
    if root is None:
        make_rootfs(os.path.join(bundle, "rootfs"))
    else:
        # Slurm 22.05 rewrites root.path to BUNDLE/rootfs: the image is that file.
        shutil.copyfile(os.path.join(FIXTURES, root), os.path.join(bundle, "image.sif"))
        os.chmod(os.path.join(bundle, "image.sif"), 0o644)
        os.symlink("image.sif", os.path.join(bundle, "rootfs"))
    subprocess.run(["chown", "-hR", f"{cluster.user.pw_uid}:{cluster.user.pw_gid}", bundle],
                   check=True)
    r = subprocess.run(["runuser", "-u", USER, "--", ocirt_bin, "spec", "--rootless",
                        "--bundle", bundle], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["root"] = {"path": "rootfs", "readonly": root is not None}
    with open(path, "w") as f:
        json.dump(config, f)
    return bundle


@pytest.fixture(scope="module")
def busybox(cluster, ocirt_bin):
    return user_bundle(cluster, ocirt_bin, "busybox")


def test_srun_container_stdout_exit_code_env(cluster, configure, busybox):
    r = cluster.srun(f"--container={busybox}", "sh", "-c",
                     'echo "out:$FROM_SRUN"; echo err >&2; echo "job:$SLURM_JOB_ID"; id -u; '
                     'cat /proc/self/uid_map; test -e /bin/busybox && echo in-busybox; exit 7',
                     env={"FROM_SRUN": "hello"})
    assert r.returncode == 7, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "out:hello"  # the user's environment reaches the container
    assert lines[1].startswith("job:") and lines[1] != "job:"  # and Slurm's
    assert lines[2] == "0"  # root in the container's user namespace...
    assert lines[3].split() == ["0", str(cluster.user.pw_uid), "1"]  # ...is the user
    assert lines[4] == "in-busybox"
    assert "err" in r.stderr


def test_srun_container_from_a_signed_sif(cluster, configure, ocirt_bin):
    configure(f"--key {KEY}")
    signed = user_bundle(cluster, ocirt_bin, "signed", SIGNED)
    r = cluster.srun(f"--container={signed}", "sh", "-c",
                     "head -1 /.singularity.d/runscript; grep ' / ' /proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#!/bin/sh")
    assert "squashfuse" in r.stdout  # the image itself, mounted for the container
    unsigned = user_bundle(cluster, ocirt_bin, "unsigned", UNSIGNED)
    r = cluster.srun(f"--container={unsigned}", "sh", "-c", "echo ran")
    assert r.returncode != 0 and "ran" not in r.stdout
    assert "signature not found" in r.stderr


@pytest.mark.parametrize("image", [None, SIGNED], ids=["busybox", "sif"])
def test_scancel_of_a_running_container_leaves_nothing(cluster, configure, ocirt_bin, image,
                                                       tmp_path):
    configure(f"--key {KEY}" if image else "")
    bundle = user_bundle(cluster, ocirt_bin, f"cancel-{image or 'busybox'}", image)
    out = str(tmp_path / "srun.out")
    srun = cluster.spawn_srun(f"--container={bundle}", "sh", "-c", "echo started; sleep 1000",
                              out=out)
    try:
        assert wait_for(lambda: "started" in read(out)), read(out)
        jobs = cluster.jobs()
        assert len(jobs) == 1
        state_root = cluster.path("run", str(cluster.user.pw_uid), "ocirt")
        cid = f"{NODE}.{USER}.{jobs[0]}.0.0"
        assert os.listdir(state_root) == [cid]
        if image:
            assert any(m.endswith(f"{cid}/rootfs") for m in cluster.mounts())
        assert live(processes_naming("sleep 1000")) != []
        cluster.scancel(jobs[0])
        srun.wait(timeout=60)
    finally:
        if srun.poll() is None:
            srun.kill()
            srun.wait()
    assert "CANCELLED" in read(out)  # (srun's own status: 0 once it stops waiting)
    assert wait_for(lambda: not os.listdir(state_root)), os.listdir(state_root)
    assert live(processes_naming("sleep 1000")) == []
    rootfs = os.path.join(bundle, "rootfs")
    assert processes_rooted_in(os.path.realpath(rootfs)) == []
