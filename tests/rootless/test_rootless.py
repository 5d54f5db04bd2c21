"""Rootless: an unprivileged user runs containers in a user namespace (spec --rootless)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conformance.bundle import make_rootfs
from tests.conftest import IN_CHROOT, user_runnable_ocirt
from tests.leaks import mounts_under

USER = "ocirt-test"

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(IN_CHROOT, reason="the kernel refuses user namespaces to "
                                                   "a process in a chroot")]


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no {USER} user (contrib/setup.sh creates it)")


@pytest.fixture
def rootless(ocirt_bin):
    """(run(*args) as the user, its home for bundles, the user's entry)."""
    entry = _user()
    ocirt_bin = user_runnable_ocirt(ocirt_bin, USER)
    home = tempfile.mkdtemp(prefix="ocirt-rootless-")
    os.chown(home, entry.pw_uid, entry.pw_gid)
    runtime_dir = os.path.join(home, "run")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR": runtime_dir,
           "HOME": home}

    def run(*args: str, check: bool = True, userns: bool = False,
            environ: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
        """As the user; `userns`: as uid 0 of a user namespace of the user's (as rootless
        podman runs the runtime); `environ` adds variables, None removes one."""
        merged = {**env, **(environ or {})}
        # unshare(1) only stages the caller here; the runtime itself never shells out
        prefix = ["unshare", "--user", "--map-root-user"] if userns else []
        # files, not pipes: a created container keeps the runtime's stdio open
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run(["runuser", "-u", USER, "--", *prefix, "env", "-i",
                                *(f"{k}={v}" for k, v in merged.items() if v is not None),
                                ocirt_bin, *args],
                               stdout=out, stderr=err, text=True, timeout=60, cwd=home,
                               stdin=subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            r.stdout, r.stderr = out.read(), err.read()
        if check:
            assert r.returncode == 0, r.stderr
        return r

    try:
        yield run, home, entry
    finally:
        ids = run("list", "-q", check=False).stdout.split()
        for cid in ids:
            run("delete", "--force", cid, check=False)
        leftovers = mounts_under(home)
        shutil.rmtree(home, ignore_errors=True)
        assert not ids, f"containers left: {ids}"
        assert not leftovers


def make_user_bundle(run, home: str, entry: pwd.struct_passwd, args: list[str],
                     edit=None) -> str:
    bundle = os.path.join(home, f"bundle{len(os.listdir(home))}")
    os.mkdir(bundle)
    make_rootfs(os.path.join(bundle, "rootfs"))
    subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", bundle], check=True)
    run("spec", "--rootless", "--bundle", bundle)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"].update(terminal=False, args=args)
    if edit:
        edit(config)
    with open(path, "w") as f:
        json.dump(config, f)
    return bundle


def test_rootless_run_maps_the_user_to_root(rootless):
    run, home, entry = rootless
    b = make_user_bundle(run, home, entry, ["sh", "-c", "id -u; cat /proc/self/uid_map"])
    r = run("run", "--bundle", b, "r1")
    lines = r.stdout.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(entry.pw_uid), "1"]
    root = os.stat(os.path.join(home, "run", "ocirt"))  # the state is in XDG_RUNTIME_DIR
    assert (root.st_uid, oct(root.st_mode & 0o7777)) == (entry.pw_uid, "0o1700")  # runc's


def test_rootless_cgroupfs_is_read_only(rootless):
    """CVE-2023-25809: no writable cgroupfs in a rootless container."""
    run, home, entry = rootless
    b = make_user_bundle(run, home, entry, ["sh", "-c", "grep ' /sys/fs/cgroup' /proc/mounts"])
    out = run("run", "--bundle", b, "r1").stdout
    options = [line.split()[3] for line in out.splitlines()]
    assert options and all(o.split(",")[0] == "ro" for o in options), out


def test_rootless_lifecycle(rootless):
    run, home, entry = rootless
    b = make_user_bundle(run, home, entry, ["sleep", "100"])
    run("create", "--bundle", b, "r1")
    state = json.loads(run("state", "r1").stdout)
    assert state["status"] == "created"
    with open(f"/proc/{state['pid']}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(entry.pw_uid)}  # as the host sees it
    run("start", "r1")
    run("kill", "r1", "KILL")
    run("delete", "--force", "r1")
    assert run("list", "-q").stdout == ""


def test_rootless_exec_joins_the_container(rootless):
    """An unprivileged `exec` may not join the container's pid namespace itself (the
    kernel wants CAP_SYS_ADMIN in our own user namespace), so it does not fork the
    process straight into it as root does: its intermediate joins the user namespace
    first, then the others, and forks the process, which is the container's."""
    run, home, entry = rootless
    b = make_user_bundle(run, home, entry, ["sleep", "100"])
    run("run", "-d", "--bundle", b, "r1")
    init = json.loads(run("state", "r1").stdout)["pid"]
    pidfile = os.path.join(home, "exec.pid")
    run("exec", "-d", "--pid-file", pidfile, "r1", "sleep", "50")
    with open(pidfile) as f:
        pid = int(f.read())
    for ns in ("user", "pid", "mnt", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
    r = run("exec", "r1", "sh", "-c", "id -u; cat /proc/self/uid_map")
    lines = r.stdout.splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", str(entry.pw_uid), "1"], r.stdout
    run("delete", "--force", "r1")


def test_rootless_subordinate_ids(rootless):
    """More than one id mapped: newuidmap/newgidmap from the uidmap package."""
    run, home, entry = rootless
    ranges = {}
    for name in ("subuid", "subgid"):
        with open(f"/etc/{name}") as f:
            line = next((x for x in f if x.startswith(f"{USER}:")), None)
        if line is None or shutil.which("newuidmap") is None:
            pytest.skip("no subordinate ids for the test user")
        ranges[name] = line.strip().split(":")[1]

    def edit(config):
        for key, name in (("uidMappings", "subuid"), ("gidMappings", "subgid")):
            config["linux"][key].append({"containerID": 1, "hostID": int(ranges[name]),
                                         "size": 1000})
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
    b = make_user_bundle(run, home, entry, ["sh", "-c", "id -u; wc -l < /proc/self/uid_map"],
                         edit)
    assert run("run", "--bundle", b, "r1").stdout.split() == ["1000", "2"]


def test_rootless_sif_image_through_squashfuse(rootless):
    """The seed's point: an unprivileged user runs a SIF image, mounted with squashfuse."""
    from tests.sif.helpers import fixture

    run, home, entry = rootless
    if shutil.which("squashfuse") is None or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("squashfuse or /dev/fuse unavailable")
    image = os.path.join(home, "a.sif")
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    os.chown(image, entry.pw_uid, entry.pw_gid)
    r = run("run", "--image", image, "s1")
    assert "runscript: hello from SIF" in r.stdout
    assert mounts_under(home) == []


def test_uid_0_in_a_user_namespace_keeps_state_in_xdg_runtime_dir(rootless):
    """Rootless podman runs the runtime as uid 0 of its user namespace: the state root is
    $XDG_RUNTIME_DIR/ocirt there too (runc's shouldHonorXDGRuntimeDir), not /run/ocirt,
    and the container runs without a word about cgroups it may not have."""
    run, home, entry = rootless
    def own_ids(config: dict) -> None:  # ids as the namespace the runtime runs in has them
        for key in ("uidMappings", "gidMappings"):
            config["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1}]

    b = make_user_bundle(run, home, entry, ["sh", "-c", "id -u; cat /proc/self/uid_map"],
                         edit=own_ids)
    r = run("run", "--bundle", b, "r-userns", userns=True)
    assert r.stdout.split("\n")[0] == "0"
    assert r.stderr == ""
    assert os.path.isdir(os.path.join(home, "run", "ocirt"))
    assert not os.path.exists("/run/ocirt/r-userns")
    assert os.stat(os.path.join(home, "run", "ocirt")).st_uid == entry.pw_uid


def test_user_root_in_a_user_namespace_uses_the_system_root(rootless):
    """runc's exception: USER=root inside the namespace means the system's root."""
    run, home, entry = rootless
    r = run("list", userns=True, environ={"USER": "root", "XDG_RUNTIME_DIR": None},
            check=False)
    assert r.returncode == 0 or "/run/ocirt" in r.stderr, r.stderr
    assert "XDG_RUNTIME_DIR" not in r.stderr


@pytest.mark.parametrize("userns", [False, True])
def test_a_missing_xdg_runtime_dir_is_named(rootless, userns):
    run, home, entry = rootless
    r = run("list", userns=userns, environ={"XDG_RUNTIME_DIR": None}, check=False)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "XDG_RUNTIME_DIR is not set" in r.stderr
    assert run("spec", "--bundle", home, userns=userns,
               environ={"XDG_RUNTIME_DIR": None}).returncode == 0  # needs no state root


def test_make_bundle_rootless_gives_a_bundle_the_user_can_run(rootless, ocirt_bin):
    """The README's rootless recipe: contrib/make-bundle.sh --rootless, then run."""
    ocirt_bin = user_runnable_ocirt(ocirt_bin, USER)
    run, home, entry = rootless
    script = os.path.join(home, "make-bundle.sh")  # the checkout may be closed to the user
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "..", "contrib",
                             "make-bundle.sh"), script)
    bundle = os.path.join(home, "mine")
    # The script forks one `ln` per busybox applet (about 400): a minute under TCG.
    made = subprocess.run(["runuser", "-u", USER, "--", "env", f"OCIRT={ocirt_bin}",
                           "PATH=/usr/bin:/bin", "bash", script, "--rootless", bundle, "id"],
                          capture_output=True, text=True, timeout=300, cwd=home)
    assert made.returncode == 0, made.stderr
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    assert config["linux"]["uidMappings"] == [
        {"containerID": 0, "hostID": entry.pw_uid, "size": 1}]
    r = run("run", "--bundle", bundle, "mine")
    assert r.stdout.startswith("uid=0(root) gid=0(root)") and r.stderr == ""


def test_root_acts_as_the_owner_of_a_users_state_root(rootless, ocirt_bin, tmp_path):
    """Slurm runs RunTimeQuery/RunTimeDelete as root against the job user's state root:
    ocirt then continues as that user, so a state file the user wrote cannot make root
    remove (or unmount) anything the user could not."""
    run, home, entry = rootless
    b = make_user_bundle(run, home, entry, ["sleep", "100"])
    run("create", "--bundle", b, "r1")
    root = os.path.join(home, "run", "ocirt")
    victim = tmp_path / "root-only"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.chmod(victim, 0o755)
    state_file = os.path.join(root, "r1", "state.json")
    with open(state_file) as f:
        state = json.load(f)
    state["sif_mount"] = {"target": str(victim), "writable": False,
                          "steps": [{"kind": "tree", "path": str(victim)}]}
    with open(state_file, "w") as f:  # as the user could write it
        json.dump(state, f)

    def as_root(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ocirt_bin, "--root", root, *args], capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    r = as_root("state", "r1")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "created", r.stderr
    r = as_root("delete", "--force", "r1")
    assert (victim / "keep").read_text() == "x"  # the user cannot remove it, nor could root
    assert not os.path.exists(os.path.join(root, "r1")), r.stderr
    assert run("list", "-q").stdout == ""


def test_rootless_containers_of_one_image_share_one_squashfuse(rootless):
    """One FUSE mount (and one squashfuse server) per user and image, whatever the number
    of containers; the last delete unmounts it."""
    from tests.leaks import processes_naming
    from tests.sif.helpers import fixture

    run, home, entry = rootless
    image = os.path.join(home, "image.sif")
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    os.chown(image, entry.pw_uid, entry.pw_gid)
    os.chmod(image, 0o644)

    def edit(config):
        config["root"] = {"path": image, "readonly": True}
    b = make_user_bundle(run, home, entry, ["sleep", "60"], edit)
    for i in range(3):
        run("run", "-d", "--bundle", b, f"f{i}")
    images = os.path.join(home, "run", "ocirt", "@images")

    def fuse_mounts() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            rows = [line.split() for line in f]
        return [r[4] for r in rows if r[4].startswith(images + "/")
                and r[r.index("-") + 1] == "fuse.squashfuse"]
    (point,) = fuse_mounts()
    assert len(processes_naming(point)) == 1  # one squashfuse server
    r = run("exec", "f1", "head", "-1", "/.singularity.d/runscript")
    assert r.stdout.startswith("#!/bin/sh")
    for i in range(3):
        run("delete", "--force", f"f{i}")
    assert fuse_mounts() == [] and processes_naming(point) == []
    assert [n for n in os.listdir(images) if n != ".lock"] == []
