"""One verified mount per SIF image: concurrent containers of one image (run --image, or
root.path naming it) share one loop device and one read-only squashfs mount under the
state root's @images, released by the last delete, and recovered after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from conformance.bundle import default_config, make_rootfs
from tests.leaks import mounts_under
from tests.sif.helpers import fixture, loop_backings, run_sif

pytestmark = pytest.mark.root

N = 8


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A busybox SIF whose runscript runs its arguments, signed; (image, public key)."""
    base = tmp_path_factory.mktemp("shared-image")
    rootfs = make_rootfs(str(base / "rootfs"))
    img = str(base / "app.sif")
    run_sif("create", "--rootfs", rootfs, "--runscript", 'exec "$@"', img, check=True)
    run_sif("keygen", "--type", "ecdsa", str(base / "site"), check=True)
    run_sif("sign", "--key", str(base / "site.key"), img, check=True)
    return img, str(base / "site.pub")


def squashfs_mounts(root: str) -> list[tuple[str, str]]:
    """(mount point, major:minor) of the squashfs mounts below the state root."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "squashfs" and fields[4].startswith(root + "/"):
                out.append((fields[4], fields[2]))
    return out


def loops_of(path: str) -> list[str]:
    real = os.path.realpath(path)
    return sorted(dev for dev, backing in loop_backings().items() if backing == real)


def shared_dirs(root: str) -> list[str]:
    images = os.path.join(root, "@images")
    return sorted(n for n in os.listdir(images) if n != ".lock") if os.path.isdir(images) \
        else []


def start_all(ocirt, argvs: list[list[str]], niceness: int = 0
              ) -> list[subprocess.CompletedProcess]:
    """Start every command at once (the runtime under test, each its own process, `nice`d
    by `niceness`); their output goes to files, since a detached container keeps its
    stdio open."""
    with contextlib.ExitStack() as stack:
        files = [(stack.enter_context(tempfile.TemporaryFile("w+")),
                  stack.enter_context(tempfile.TemporaryFile("w+"))) for _ in argvs]
        procs = [subprocess.Popen([ocirt.binary, "--root", ocirt.root, *argv], stdout=out,
                                  stderr=err, text=True, stdin=subprocess.DEVNULL,
                                  preexec_fn=(lambda: os.nice(niceness)) if niceness
                                  else None)
                 for argv, (out, err) in zip(argvs, files, strict=True)]
        results = []
        for argv, p, (out, err) in zip(argvs, procs, files, strict=True):
            p.wait(timeout=120)
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(argv, p.returncode, out.read(),
                                                       err.read()))
    return results


def assert_released(ocirt, img: str) -> None:
    assert squashfs_mounts(ocirt.root) == [] and mounts_under(ocirt.root) == []
    assert wait_for(lambda: loops_of(img) == []), loops_of(img)
    assert shared_dirs(ocirt.root) == []


def wait_for(cond, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_concurrent_run_image_share_one_loop_device_and_one_mount(ocirt, image):
    img, key = image
    results = start_all(ocirt, [["run", "-d", "--image", img, "--key", key, f"shm-c{i}", "--",
                                 "sleep", "60"] for i in range(N)])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert sorted(ocirt.ids()) == sorted(f"shm-c{i}" for i in range(N))
    mounts = squashfs_mounts(ocirt.root)
    assert len(mounts) == 1, mounts  # one superblock for all eight
    assert len(loops_of(img)) == 1, loop_backings()
    (point, devno), = mounts
    assert point.startswith(os.path.join(ocirt.root, "@images") + "/")
    major, minor = (int(x) for x in devno.split(":"))
    for i in range(N):  # what each container sees as / is that mount
        r = ocirt("exec", f"shm-c{i}", "stat", "-c", "%d", "/")
        assert r.rc == 0 and int(r.out) == os.makedev(major, minor), r
    refs = os.listdir(os.path.join(os.path.dirname(os.path.dirname(point)), "refs"))
    assert sorted(refs) == sorted(f"shm-c{i}" for i in range(N))
    results = start_all(ocirt, [["delete", "--force", f"shm-c{i}"] for i in range(N)])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert ocirt.ids() == []
    assert_released(ocirt, img)
    assert os.listdir(os.path.join(ocirt.root, "@sif-bundles")) == []


def test_root_path_sif_containers_share_the_mount_and_the_last_delete_releases(
        ocirt, image, tmp_path):
    img, _ = image
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = default_config(["sleep", "60"])
    config["root"] = {"path": img}
    (bundle / "config.json").write_text(json.dumps(config))
    for i in range(3):
        ocirt("run", "-d", "--bundle", str(bundle), f"r{i}", check=True)
    assert len(squashfs_mounts(ocirt.root)) == 1 and len(loops_of(img)) == 1
    for i in range(2):
        ocirt("delete", "--force", f"r{i}", check=True)
        assert len(squashfs_mounts(ocirt.root)) == 1  # still used by the last one
    r = ocirt("exec", "r2", "cat", "/.singularity.d/runscript")
    assert r.rc == 0 and 'exec "$@"' in r.out
    ocirt("delete", "--force", "r2", check=True)
    assert_released(ocirt, img)


def test_verified_once_per_image_and_policy(ocirt, image, tmp_path):
    img, key = image
    first = ocirt("--debug", "run", "-d", "--image", img, "--key", key, "v1", "--", "sleep",
                  "60")
    assert first.rc == 0, first
    assert "mounted once for the state root" in first.err
    ocirt("run", "--image", img, "v2", "--", "true", check=True)  # no policy: shares it
    again = ocirt("--debug", "run", "--image", img, "--key", key, "v3", "--", "true")
    assert again.rc == 0, again
    assert "already verified against this policy" in again.err
    # A key it was not verified with is checked, even though the image is mounted.
    run_sif("keygen", "--type", "ecdsa", str(tmp_path / "other"), check=True)
    other = ocirt("run", "--image", img, "--key", str(tmp_path / "other.pub"), "v4", "--",
                  "true")
    assert other.rc == 1 and "verification failed" in other.err, other
    ocirt("delete", "--force", "v1", check=True)
    assert ocirt.ids() == []
    assert_released(ocirt, img)


def test_an_unverified_shared_mount_is_still_checked(ocirt, image, tmp_path):
    """An unsigned image mounted for a container without a policy is refused to one
    with a policy: sharing never skips a check."""
    key = image[1]
    unsigned = fixture("a-minimal-busybox.sif")
    bundle = tmp_path / "b"
    bundle.mkdir()
    config = default_config(["sleep", "60"])
    config["root"] = {"path": unsigned}
    (bundle / "config.json").write_text(json.dumps(config))
    ocirt("run", "-d", "--bundle", str(bundle), "u1", check=True)
    r = ocirt("run", "-d", "--key", key, "--bundle", str(bundle), "u2")
    assert r.rc == 1 and "signature not found" in r.err, r
    assert ocirt.ids() == ["u1"]
    ocirt("delete", "--force", "u1", check=True)
    assert_released(ocirt, unsigned)


def test_sigkill_of_run_then_delete_force_releases(ocirt, image):
    img, _ = image
    proc = subprocess.Popen([ocirt.binary, "--root", ocirt.root, "run", "--image", img, "k1",
                             "--", "sleep", "60"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: "k1" in ocirt.ids() and ocirt.state("k1")["status"] ==
                        "running"), ocirt.ids()
        ocirt("run", "-d", "--image", img, "k2", "--", "sleep", "60", check=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(squashfs_mounts(ocirt.root)) == 1
    ocirt("delete", "--force", "k1", check=True)
    assert len(squashfs_mounts(ocirt.root)) == 1  # k2 still runs from it
    ocirt("delete", "--force", "k2", check=True)
    assert_released(ocirt, img)


def test_stale_references_and_a_half_made_mount_are_cleaned(ocirt, image):
    """A reference whose container and taker are gone does not keep the mount, and a
    directory a crash left without its record is detached and made again."""
    img, _ = image
    ocirt("run", "-d", "--image", img, "s1", "--", "sleep", "60", check=True)
    (keydir,) = [os.path.join(ocirt.root, "@images", k) for k in shared_dirs(ocirt.root)]
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(keydir, "refs", "ghost"), "w") as f:
        json.dump({"pid": dead.pid, "start": 1}, f)
    ocirt("delete", "--force", "s1", check=True)
    assert_released(ocirt, img)  # the ghost did not keep it
    # A crash while mounting: the key directory, something mounted in it, no record.
    ocirt("run", "-d", "--image", img, "s2", "--", "sleep", "60", check=True)
    (key,) = shared_dirs(ocirt.root)
    ocirt("delete", "--force", "s2", check=True)
    half = os.path.join(ocirt.root, "@images", key, "layers", "lower0")
    os.makedirs(half)
    subprocess.run(["mount", "-t", "tmpfs", "half-made", half], check=True)
    try:
        r = ocirt("run", "--image", img, "s3", "--", "cat", "/.singularity.d/runscript")
        assert r.rc == 0 and 'exec "$@"' in r.out, r
    finally:
        if mounts_under(half):
            subprocess.run(["umount", "-l", half], check=False)
    assert_released(ocirt, img)


def test_writable_tmpfs_layers_are_per_container_over_one_mount(ocirt, image):
    img, _ = image
    for name in ("w1", "w2"):
        ocirt("run", "-d", "--writable-tmpfs", "--image", img, f"shm-{name}", "--",
              "sleep", "60", check=True)
    assert len(squashfs_mounts(ocirt.root)) == 1 and len(loops_of(img)) == 1
    ocirt("exec", "shm-w1", "sh", "-c", "echo mine > /written", check=True)
    assert ocirt("exec", "shm-w1", "cat", "/written").out == "mine\n"
    assert ocirt("exec", "shm-w2", "cat", "/written").rc != 0  # not the other's
    for name in ("w1", "w2"):
        ocirt("delete", "--force", f"shm-{name}", check=True)
    assert_released(ocirt, img)


def test_containers_that_start_and_exit_at_once_all_run_and_leave_nothing(ocirt, image):
    """Leases taken and given back side by side (a give-back that finds others keeps the
    mount; the last one's unmounts, while another may be taking one): every container
    sees the image, and nothing is left once all are done."""
    img, _ = image
    for _ in range(2):
        results = start_all(ocirt, [["run", "--image", img, f"shm-x{i}", "--", "sh", "-c",
                                     "cat /.singularity.d/runscript; stat -c %d /"]
                                    for i in range(N)])
        assert all(r.returncode == 0 and 'exec "$@"' in r.stdout for r in results), \
            [(r.returncode, r.stdout, r.stderr) for r in results]
        assert ocirt.ids() == []
        assert_released(ocirt, img)


def test_later_containers_take_the_cached_bundle_and_a_changed_file_is_checked_anew(
        ocirt, image, tmp_path):
    """The first `run --image` of a mounted image leaves its bundle (config.json) in the
    mount's cache; later ones take it from the file's identity alone (no open of the
    image), each with its own arguments, and still only after the policy passed. An
    image changed in place (another mtime/ctime) gets none of that: it is verified and
    mounted anew, and a tampered one is refused though its old mount is still there."""
    import shutil

    img = str(tmp_path / "app.sif")
    shutil.copyfile(image[0], img)
    key = image[1]
    first = ocirt("--debug", "run", "-d", "--image", img, "--key", key, "k1", "--",
                  "sleep", "60")
    assert first.rc == 0 and "mounted once for the state root" in first.err, first
    for i, word in enumerate(("alpha", "beta")):
        r = ocirt("--debug", "run", "--image", img, "--key", key, f"k2{i}", "--",
                  "echo", word, f"k2{i}")
        assert r.rc == 0 and r.out.split() == [word, f"k2{i}"], r  # its own arguments
        assert "(cached)" in r.err and "already verified against this policy" in r.err, r
    # A key the mount was not verified with is checked: the cache is no way around it.
    run_sif("keygen", "--type", "ecdsa", str(tmp_path / "other"), check=True)
    other = ocirt("run", "--image", img, "--key", str(tmp_path / "other.pub"), "k3",
                  "--", "true")
    assert other.rc == 1 and "verification failed" in other.err, other
    # No arguments: the image's own command, its own cache entry (made by the first).
    for cid, cached in (("k40", False), ("k41", True)):
        r = ocirt("--debug", "run", "--image", img, cid)
        assert r.rc == 0 and ("(cached)" in r.err) == cached, r
    st = os.stat(img)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new identity
    again = ocirt("--debug", "run", "--image", img, "--key", key, "k5", "--", "true")
    assert again.rc == 0 and "(cached)" not in again.err, again
    assert "mounted once for the state root" in again.err, again
    with open(img, "r+b") as f:  # in place: the same inode, a changed partition
        size = os.fstat(f.fileno()).st_size
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = ocirt("--debug", "run", "--image", img, "--key", key, "k6", "--", "true")
    assert bad.rc == 1 and "verification failed" in bad.err and "(cached)" not in bad.err, bad
    assert len(squashfs_mounts(ocirt.root)) == 1  # k1's, of the file as it was
    assert ocirt.ids() == ["k1"]
    ocirt("delete", "--force", "k1", check=True)
    assert_released(ocirt, img)
    assert os.listdir(os.path.join(ocirt.root, "@sif-bundles")) == []


def test_a_crowd_started_at_once_waits_for_the_first_and_takes_its_cache(ocirt, image,
                                                                          tmp_path):
    """N `run --image` of an image not yet mounted, started at once: one mounts it and
    makes the bundle, the others wait for that and take the cache (none of them opens
    and verifies the image itself meanwhile); each runs its own arguments; nothing is
    left, not even the first one's lock file."""
    import shutil

    img = str(tmp_path / "crowd.sif")
    shutil.copyfile(image[0], img)
    results = start_all(ocirt, [["--debug", "run", "--image", img, "--key", image[1],
                                 f"crowd{i}", "--", "echo", f"hi{i}"] for i in range(N)])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert [r.stdout.split() for r in results] == [[f"hi{i}"] for i in range(N)]
    mounted = [r for r in results if "mounted once for the state root" in r.stderr]
    cached = [r for r in results if "(cached)" in r.stderr]
    assert len(mounted) == 1 and len(cached) == N - 1, [r.stderr for r in results]
    assert ocirt.ids() == []
    assert_released(ocirt, img)
    assert os.listdir(os.path.join(ocirt.root, "@images")) == [".lock"]


def test_the_first_of_a_crowd_mounts_ahead_of_it_and_its_container_keeps_the_callers_nice(
        ocirt, image, tmp_path):
    """The container that mounts the image for a crowd runs at the highest priority
    while it does (the others wait for it, and at their own priority it got 1/N of the
    CPUs while their runtimes started: the crowd then went on all at once instead of as
    each was ready), and gives it back before its container starts: every container's
    process, the first one's too, runs at the niceness its caller gave it."""
    import shutil

    img = str(tmp_path / "ahead.sif")
    shutil.copyfile(image[0], img)
    stat_nice = "cut -d' ' -f19 /proc/self/stat"  # (comm, field 2, is "cut": no space)
    results = start_all(ocirt, [["--debug", "run", "--image", img, "--key", image[1],
                                 f"ahead{i}", "--", "sh", "-c", stat_nice]
                                for i in range(N)], niceness=3)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert [r.stdout.split() for r in results] == [["3"]] * N, [r.stdout for r in results]
    ahead = [r for r in results
             if "mounting the image ahead of the crowd at nice -20 (was 3)" in r.stderr]
    assert len(ahead) == 1, [r.stderr for r in results]
    assert "mounted once for the state root" in ahead[0].stderr
    assert ocirt.ids() == []
    assert_released(ocirt, img)
