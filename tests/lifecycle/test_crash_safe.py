"""SIGKILL of `create` at any instant, then `delete --force`: nothing the container made
is left (its cgroups in every hierarchy, mounts, state, processes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conformance import cgroupfs
from tests.leaks import mounts_under, processes_rooted_in, processes_with_argument

pytestmark = pytest.mark.root


def _cgroup_dirs(cgroups_path: str) -> list[str]:
    """The directory the relative `cgroups_path` names in every hierarchy, where it
    exists: below our own cgroup, or on a unified host below its parent (where runc and
    ocirt put it: cgroupfs.placement_dir)."""
    own = cgroupfs.proc_cgroups()
    found = []
    for h in cgroupfs.hierarchies():
        if h.key not in own:
            continue
        d = os.path.join(_placement_base(h, own[h.key]), cgroups_path)
        if os.path.isdir(d):
            found.append(d)
    return found


def _placement_base(h, own: str) -> str:
    """Where a relative cgroupsPath goes in hierarchy `h`: below our own cgroup, or on a
    unified host below its parent (ours holds processes)."""
    base = cgroupfs.host_dir(h, own)
    if cgroupfs.is_unified() and h.fstype == "cgroup2" and base != h.mountpoint:
        base = os.path.dirname(base)
    return base


def _left(state_root: str, cid: str, bundle: str, cgroups_path: str) -> list[str]:
    what = []
    if os.path.exists(os.path.join(state_root, cid)):
        what.append(f"state directory {os.listdir(os.path.join(state_root, cid))}")
    what += [f"cgroup {d}" for d in _cgroup_dirs(cgroups_path)]
    what += [f"mount {m}" for m in mounts_under(bundle) + mounts_under(state_root)]
    procs = set(processes_rooted_in(os.path.join(bundle, "rootfs")))
    procs.update(p for p in processes_with_argument(cid) if p != os.getpid())
    what += [f"process {p} {_cmdline(p)}" for p in sorted(procs)]
    return what


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def _settle(state_root: str, cid: str, bundle: str, cgroups_path: str) -> list[str]:
    """What is left, allowing a moment for processes already SIGKILLed to be reaped."""
    deadline = time.monotonic() + 3
    while True:
        left = _left(state_root, cid, bundle, cgroups_path)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _kill_create_and_delete(ocirt, b: str, cid: str, delay: float | None,
                            argv: list[str] | None = None) -> bool:
    """Start `create` (of bundle `b`, or with `argv`); SIGKILL it after `delay` seconds
    (None: a hook does it), then `delete --force`, which must succeed. True when the
    kill came mid-create (the state directory existed and create had not finished)."""
    proc = subprocess.Popen(ocirt.cmd(*(argv or ["create", "--bundle", b, cid])),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if delay is not None:
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=60)
    mid_create = rc == -signal.SIGKILL and os.path.isdir(os.path.join(ocirt.root, cid))
    r = ocirt("delete", "--force", cid)
    assert r.rc == 0, r
    return mid_create


@pytest.fixture
def crash_bundle(bundle):
    """bundle(...), and afterwards the removal of whatever cgroups a failing case left
    (so that a failure here never leaves them on the test machine)."""
    made: list[str] = []

    def make(*args, **kw):
        made.append(bundle(*args, **kw))
        return made[-1]
    yield make
    for b in made:
        for d in _cgroup_dirs(_cgroups_path(b)):
            cgroupfs.remove_tree(d, timeout=2)


def _cgroups_path(b: str) -> str:
    import json

    with open(os.path.join(b, "config.json")) as f:
        return json.load(f)["linux"]["cgroupsPath"]


@pytest.mark.parametrize("kind", ["prestart", "createRuntime"])
def test_sigkill_from_a_hook_leaves_nothing(ocirt, crash_bundle, state_root, kind):
    """A hook that SIGKILLs its parent `create` (the moment the issue reported: cgroup
    directories were left in every hierarchy)."""
    def edit(cfg):
        cfg["hooks"] = {kind: [{"path": "/bin/sh",
                                "args": ["sh", "-c", "kill -9 $PPID; sleep 0.2"]}]}
    b = crash_bundle(["sleep", "100"], edit=edit)
    assert _kill_create_and_delete(ocirt, b, "crash-hook", None)
    assert _settle(state_root, "crash-hook", b, _cgroups_path(b)) == []


def test_sigkill_at_random_points_leaves_nothing(ocirt, crash_bundle, state_root):
    """SIGKILL after delays spread over a whole `create` (measured first; the first
    third is the interpreter starting), plus random ones; after each, `delete --force`
    leaves nothing."""
    b = crash_bundle(["sleep", "100"], edit=lambda cfg: cfg["linux"].setdefault(
        "resources", {}).update({"pids": {"limit": 100}}))
    took = []
    for _ in range(3):
        start = time.monotonic()
        r = ocirt("create", "--bundle", b, "crash-measure")
        took.append(time.monotonic() - start)
        assert r.rc == 0, r
        assert ocirt("delete", "--force", "crash-measure").rc == 0
    full = sorted(took)[1]
    rng = random.Random(1234)
    delays = [full * (0.3 + 0.75 * i / 20) for i in range(20)]
    delays += [rng.uniform(0.3 * full, 1.1 * full) for _ in range(10)]
    failures = []
    mid_create = 0
    n = 0
    while n < len(delays):
        cid = f"crash-{n}"
        mid_create += _kill_create_and_delete(ocirt, b, cid, delays[n])
        left = _settle(state_root, cid, b, _cgroups_path(b))
        if left:
            failures.append((round(delays[n], 3), left))
        n += 1
        if n == len(delays) and mid_create < 5 and len(delays) < 60:
            # a loaded machine shifts create's timing: spread more kills over it
            delays += [rng.uniform(0.3 * full, 1.5 * full) for _ in range(10)]
    assert failures == []
    assert mid_create >= 5, f"only {mid_create} of {len(delays)} kills came mid-create"


def test_sigkill_at_random_delays_under_300ms_leaves_nothing(ocirt, crash_bundle, state_root):
    """The brief's own schedule: SIGKILL after uniformly random delays of 0..300 ms (the
    interpreter's start, the plan, the state directory, the cgroups, the fork)."""
    b = crash_bundle(["sleep", "100"])
    rng = random.Random(4321)
    failures = []
    for n in range(15):
        delay = rng.uniform(0, 0.3)
        cid = f"crash-r{n}"
        _kill_create_and_delete(ocirt, b, cid, delay)
        left = _settle(state_root, cid, b, _cgroups_path(b))
        if left:
            failures.append((round(delay, 3), left))
    assert failures == []


def test_sigkill_of_a_sif_root_create_leaves_no_mount_or_loop_device(
        ocirt, crash_bundle, state_root, tmp_path):
    """root.path naming a SIF image: create mounts it from a loop device under the state
    directory. Killed at any point (measured over a whole create), `delete --force`
    leaves no mount, no loop device backed by the image, no state, no cgroup."""
    import shutil

    from tests.sif.helpers import attached_loops, fixture, wait_detached

    image = str(tmp_path / "img" / "root.sif")  # our own copy: its loops are ours alone
    os.makedirs(os.path.dirname(image))
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    b = crash_bundle(["sleep", "100"], edit=lambda cfg: cfg.update(root={"path": image}))
    start = time.monotonic()
    r = ocirt("create", "--bundle", b, "sif-measure")
    full = time.monotonic() - start
    assert r.rc == 0, r
    # it does mount: the image's shared mount, under the state root's @images
    assert mounts_under(os.path.join(state_root, "@images")) != []
    assert attached_loops(os.path.dirname(image)) != {}  # from a loop device
    assert ocirt("delete", "--force", "sif-measure").rc == 0
    assert wait_detached(os.path.dirname(image))
    rng = random.Random(99)
    delays = [full * (0.2 + 0.9 * i / 12) for i in range(12)]
    delays += [rng.uniform(0, 0.3) for _ in range(6)]
    failures = []
    for n, delay in enumerate(delays):
        cid = f"sif-{n}"
        _kill_create_and_delete(ocirt, b, cid, delay)
        left = _settle(state_root, cid, b, _cgroups_path(b)) + _shared_left(state_root)
        if not wait_detached(os.path.dirname(image)):
            left.append(f"loop devices {attached_loops(os.path.dirname(image))}")
        if left:
            failures.append((round(delay, 3), left))
    assert failures == []


def _shared_left(state_root: str) -> list[str]:
    """The image mounts (@images/KEY) and SIF bundles (@sif-bundles) left in the state
    root."""
    what = []
    for private in ("@images", "@sif-bundles"):
        d = os.path.join(state_root, private)
        names = sorted(n for n in os.listdir(d) if n != ".lock") if os.path.isdir(d) else []
        what += [f"{private}/{n}" for n in names]
    return what


def test_sigkill_of_create_image_leaves_no_mount_lease_or_loop_device(ocirt, state_root,
                                                                     tmp_path):
    """`create --image`: the bundle is made under the state root over the image's shared
    mount, leased before the container's state exists. Killed at any point of a whole
    create, `delete --force` leaves no bundle, lease, mount, loop device, state, cgroup;
    an image mount another container still uses stays (and goes with that one)."""
    import shutil

    from tests.sif.helpers import attached_loops, fixture, wait_detached

    image = str(tmp_path / "img" / "root.sif")  # our own copy: its loops are ours alone
    os.makedirs(os.path.dirname(image))
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    argv = ["create", "--image", image, "{cid}", "--", "sleep", "100"]
    start = time.monotonic()
    r = ocirt(*[a.format(cid="img-measure") for a in argv])
    full = time.monotonic() - start
    assert r.rc == 0, r
    assert mounts_under(os.path.join(state_root, "@images")) != []
    assert ocirt("delete", "--force", "img-measure").rc == 0
    assert wait_detached(os.path.dirname(image)) and _shared_left(state_root) == []
    rng = random.Random(7)
    delays = [full * (0.1 + 1.0 * i / 12) for i in range(12)]
    delays += [rng.uniform(0, 0.3) for _ in range(6)]
    failures = []
    for n, delay in enumerate(delays):
        cid = f"img-{n}"
        _kill_create_and_delete(ocirt, "", cid, delay, [a.format(cid=cid) for a in argv])
        bundles = os.path.join(state_root, "@sif-bundles")
        left = _settle(state_root, cid, bundles, cid) + _shared_left(state_root)
        if not wait_detached(os.path.dirname(image)):
            left.append(f"loop devices {attached_loops(os.path.dirname(image))}")
        if left:
            failures.append((round(delay, 3), left))
    assert failures == []
    # With another container of the image running, its mount outlives the killed one.
    ocirt(*[a.format(cid="img-keep") for a in argv], check=True)
    _kill_create_and_delete(ocirt, "", "img-k", full * 0.6,
                            [a.format(cid="img-k") for a in argv])
    assert len(mounts_under(os.path.join(state_root, "@images"))) == 1
    assert ocirt("delete", "--force", "img-keep").rc == 0
    assert _settle(state_root, "img-keep", "/nonexistent", "img-keep") == []
    assert _shared_left(state_root) == [] and wait_detached(os.path.dirname(image))


# A createRuntime hook that starts a process in the container's cgroups (in every
# hierarchy, as the init is), writes its pid to argv[1], then SIGKILLs its parent create.
_HOOK_WITH_A_STRAY = r"""
import json, os, subprocess, sys
state = json.load(sys.stdin)
stray = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
mounts = {}
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    fstype, opts = right.split()[0], right.split()[2]
    if fstype == "cgroup2":
        mounts[""] = left.split()[4]
    elif fstype == "cgroup":
        for o in opts.split(","):
            mounts.setdefault(o, left.split()[4])
for line in open(f"/proc/{state['pid']}/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    key = controllers.split(",")[0]
    if key in mounts:
        with open(os.path.join(mounts[key] + path, "cgroup.procs"), "w") as f:
            f.write(str(stray.pid))
with open(sys.argv[1], "w") as f:
    f.write(str(stray.pid))
os.kill(os.getppid(), 9)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_from_a_hook_kills_what_runs_in_the_cgroups(ocirt, crash_bundle, state_root,
                                                          tmp_path):
    """A process put into the container's cgroups before create died is killed by
    `delete --force`, and the cgroups go with it."""
    hook = tmp_path / "hook.py"
    hook.write_text(_HOOK_WITH_A_STRAY)
    pid_file = tmp_path / "stray.pid"

    def edit(cfg):
        cfg["hooks"] = {"createRuntime": [{"path": "/usr/bin/python3",
                                           "args": ["python3", str(hook), str(pid_file)]}]}
    b = crash_bundle(["sleep", "100"], edit=edit)
    proc = subprocess.Popen(ocirt.cmd("create", "--bundle", b, "crash-stray"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    stray = int(pid_file.read_text())
    try:
        assert _alive(stray)
        assert _cgroup_dirs(_cgroups_path(b)) != []  # left by the killed create
        r = ocirt("delete", "--force", "crash-stray")
        assert r.rc == 0, r
        assert _settle(state_root, "crash-stray", b, _cgroups_path(b)) == []
        deadline = time.monotonic() + 3
        while _alive(stray) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(stray), f"stray process {stray} still runs"
    finally:
        if _alive(stray):
            os.kill(stray, signal.SIGKILL)


def test_sigkill_of_create_image_leaves_no_bundle_mount_or_loop_device(
        ocirt, state_root, tmp_path):
    """`create --image`: the bundle is made (and its image mounted) before the container's
    state exists. Killed at any point, `delete --force` leaves no bundle under the state
    root, no mount, no loop device backed by the image, no state directory."""
    import shutil

    from tests.sif.helpers import attached_loops, fixture, wait_detached

    image = str(tmp_path / "img" / "root.sif")  # our own copy: its loops are ours alone
    os.makedirs(os.path.dirname(image))
    shutil.copyfile(fixture("a-minimal-busybox.sif"), image)
    bundles = os.path.join(state_root, "@sif-bundles")
    start = time.monotonic()
    r = ocirt("create", "--image", image, "img-measure")
    full = time.monotonic() - start
    assert r.rc == 0, r
    assert os.listdir(bundles) == ["img-measure"]
    assert attached_loops(os.path.dirname(image)) != {}
    assert ocirt("delete", "--force", "img-measure").rc == 0
    assert os.listdir(bundles) == [] and wait_detached(os.path.dirname(image))
    rng = random.Random(7)
    delays = [full * (0.1 + 1.0 * i / 12) for i in range(12)]
    delays += [rng.uniform(0, 0.3) for _ in range(6)]
    failures = []
    for n, delay in enumerate(delays):
        cid = f"img-{n}"
        proc = subprocess.Popen(ocirt.cmd("create", "--image", image, cid),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        r = ocirt("delete", "--force", cid)
        assert r.rc == 0, r
        left = [f"mount {m}" for m in mounts_under(state_root)]
        if os.path.exists(bundles):
            left += [f"bundle {name}" for name in os.listdir(bundles)]
        if os.path.exists(os.path.join(state_root, cid)):
            left.append("state directory")
        if not wait_detached(os.path.dirname(image)):
            left.append(f"loop devices {attached_loops(os.path.dirname(image))}")
        if left:
            failures.append((round(delay, 3), left))
    assert failures == []


def test_sigkill_mid_create_keeps_a_parent_cgroup_it_did_not_make(ocirt, crash_bundle,
                                                                 state_root):
    """cgroupsPath PARENT/LEAF where PARENT existed before: after a create killed by its
    hook and `delete --force`, LEAF is gone from every hierarchy and PARENT, not ours to
    remove, is still there (the cgroup rule)."""
    def edit(cfg):
        cfg["linux"]["cgroupsPath"] += "/leaf"
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh",
                                           "args": ["sh", "-c", "kill -9 $PPID; sleep 0.2"]}]}
    b = crash_bundle(["sleep", "100"], edit=edit)
    leaf = _cgroups_path(b)
    parent = os.path.dirname(leaf)
    own = cgroupfs.proc_cgroups()
    made = []
    try:
        for h in cgroupfs.hierarchies():
            if h.key in own:
                d = os.path.join(_placement_base(h, own[h.key]), parent)
                os.mkdir(d)
                made.append(d)
                for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty at first
                    if h.key == "cpuset" and os.path.exists(os.path.join(d, name)):
                        with open(os.path.join(d, name), "w") as f:
                            f.write(cgroupfs.read(os.path.dirname(d), name))
        assert made
        assert _kill_create_and_delete(ocirt, b, "crash-parent", None)
        assert _settle(state_root, "crash-parent", b, leaf) == []
        assert sorted(_cgroup_dirs(parent)) == sorted(made)
    finally:
        for d in made:
            cgroupfs.remove_tree(d, timeout=2)


def test_sigkill_from_a_hook_without_a_mount_namespace_leaves_no_host_mount(
        ocirt, crash_bundle, state_root):
    """A container without a mount namespace of its own mounts below its rootfs in ours;
    create killed by its createRuntime hook, `delete --force` detaches those mounts (and
    only those: the ones below the rootfs before create are kept)."""
    def edit(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "mount"]
        cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []  # need one
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh",
                                           "args": ["sh", "-c", "kill -9 $PPID; sleep 0.2"]}]}
    b = crash_bundle(["sleep", "100"], edit=edit)
    proc = subprocess.Popen(ocirt.cmd("create", "--bundle", b, "crash-nomnt"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert mounts_under(os.path.join(b, "rootfs")) != []  # the init's, in our namespace
    r = ocirt("delete", "--force", "crash-nomnt")
    assert r.rc == 0, r
    assert _settle(state_root, "crash-nomnt", b, _cgroups_path(b)) == []
