"""Checkpoint and restore with CRIU, under ocirt and under runc (the reference).

A busybox shell counts into a file of a bind-mounted host directory; it is checkpointed
(the container goes), restored as a new container of the same bundle, and must go on
counting from where it stopped: the shell's counter lives in its memory, so a restart
would begin at 1 again. CRIU must work on the kernel (`criu check`); on a kernel it does
not know (this project's 6.18 development VM) the CRIU cases skip, and only the error
paths run: those need no working CRIU.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from conformance.runner import Runtime, wait_for
from tests.checkpoint.helpers import needs_criu, needs_lazy_pages
from tests.checkpoint.helpers import numbers as _numbers
from tests.checkpoint.helpers import root_can_be_made_slave as _root_can_be_made_slave
from tests.checkpoint.helpers import run_detached as _run_detached

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root")]


def _restore(rt: Runtime, cid: str, bundle: str, images: str, *extra: str):
    with open(os.devnull, "wb") as null:
        return rt("restore", "-d", "--image-path", images, "--bundle", bundle, *extra, cid,
                  stdout=null)


def _growing(path: str, above: int) -> bool:
    return wait_for(lambda: len([n for n in _numbers(path) if n > above]) >= 3, timeout=20)


def _cgroup_dirs(bundle: str) -> list[str]:
    with open(os.path.join(bundle, "config.json")) as f:
        name = json.load(f)["linux"]["cgroupsPath"].strip("/")
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(top) == name:
            found.append(top)
        if top.count("/") > 6:
            dirs.clear()
    return found


@needs_criu
def test_counter_continues_after_checkpoint_and_restore(runtime, counter, tmp_path):
    b, count = counter
    images = str(tmp_path / "images")
    _run_detached(runtime, "cr1", b)
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=20)
    r = runtime("checkpoint", "--image-path", images, "cr1")
    assert r.ok, r
    assert os.path.exists(os.path.join(images, "descriptors.json"))
    # the container is gone (runc destroys it), and it counts no more
    assert runtime.status("cr1") is None
    stopped_at = _numbers(count)
    time.sleep(0.5)
    assert _numbers(count) == stopped_at
    r = _restore(runtime, "cr1", b, images)
    assert r.ok, r
    assert runtime.status("cr1") == "running"
    assert _growing(count, stopped_at[-1]), _numbers(count)[-10:]
    after = _numbers(count)[len(stopped_at):]
    # from where it stopped: the next number, then one by one (not again from 1)
    assert after[0] == stopped_at[-1] + 1, (stopped_at[-3:], after[:3])
    assert after == list(range(after[0], after[0] + len(after)))
    state = runtime.state("cr1")
    assert state["pid"] > 0 and os.path.exists(f"/proc/{state['pid']}")
    assert runtime("delete", "--force", "cr1").ok
    assert runtime.status("cr1") is None


@needs_criu
def test_leave_running_keeps_the_container(runtime, counter, tmp_path):
    b, count = counter
    images = str(tmp_path / "images")
    _run_detached(runtime, "cr2", b)
    assert wait_for(lambda: len(_numbers(count)) >= 3, timeout=20)
    r = runtime("checkpoint", "--leave-running", "--image-path", images, "cr2")
    assert r.ok, r
    dumped_below = _numbers(count)[-1] + 1  # the dump happened before this was written
    assert runtime.status("cr2") == "running"
    assert _growing(count, dumped_below + 2)
    assert runtime("delete", "--force", "cr2").ok
    before = len(_numbers(count))
    r = _restore(runtime, "cr2", b, images)
    assert r.ok, r
    assert wait_for(lambda: len(_numbers(count)) >= before + 3, timeout=20)
    again = _numbers(count)[before:]
    # the restored shell counts on from its dumped value, which is below where the
    # original was when it was deleted: an older copy of the same process
    assert 1 < again[0] <= dumped_below + 1, (dumped_below, again[:3])


@needs_criu
def test_pre_dump_then_dump_with_parent(runtime, counter, tmp_path):
    b, count = counter
    _run_detached(runtime, "cr3", b)
    assert wait_for(lambda: len(_numbers(count)) >= 3, timeout=20)
    pre, final = str(tmp_path / "pre"), str(tmp_path / "final")
    r = runtime("checkpoint", "--pre-dump", "--image-path", pre, "cr3")
    assert r.ok, r
    assert runtime.status("cr3") == "running"
    r = runtime("checkpoint", "--parent-path", "../pre", "--image-path", final, "cr3")
    assert r.ok, r
    assert runtime.status("cr3") is None
    stopped_at = _numbers(count)[-1]
    r = _restore(runtime, "cr3", b, final)
    assert r.ok, r
    assert _growing(count, stopped_at)


@needs_criu
def test_failed_restore_leaves_nothing(runtime, counter, tmp_path):
    """The bind mount's source is gone at restore: CRIU fails, and no state, cgroup,
    mount or process of the new container is left."""
    b, count = counter
    images = str(tmp_path / "images")
    _run_detached(runtime, "cr4", b)
    assert wait_for(lambda: len(_numbers(count)) >= 3, timeout=20)
    assert runtime("checkpoint", "--image-path", images, "cr4").ok
    shutil.rmtree(os.path.dirname(count))
    r = _restore(runtime, "cr4", b, images)
    assert not r.ok
    assert runtime.status("cr4") is None
    assert runtime("list", "-q").out.strip() == ""
    assert _cgroup_dirs(b) == []
    with open("/proc/self/mountinfo") as f:
        assert runtime.root not in f.read()
    if runtime.name == "ocirt":
        assert len(r.err.strip().splitlines()) == 1, r.err
        assert "criu failed: restore" in r.err and "restore.log" in r.err


def test_restore_without_a_checkpoint_is_one_line(ocirt, counter, tmp_path):
    b, _ = counter
    r = ocirt("restore", "--image-path", str(tmp_path / "nothing"), "--bundle", b, "cr5")
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1 and "holds no checkpoint" in r.err, r.err
    assert ocirt.status("cr5") is None


@pytest.mark.parametrize("criu", ["missing", "failing"])
def test_unusable_criu_leaves_the_container_running(ocirt, counter, tmp_path, criu):
    """No criu, or a `criu check` that fails (as on a kernel CRIU does not know): one
    line saying so, and the container runs on untouched."""
    b, count = counter
    if criu == "missing":
        binary = str(tmp_path / "no-such-criu")
    else:
        binary = str(tmp_path / "criu")
        with open(binary, "w") as f:
            f.write("#!/bin/sh\necho 'Error (criu/kerndat.c:1): kernel too new' >&2\nexit 1\n")
        os.chmod(binary, 0o755)
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    _run_detached(rt, "cr6", b)
    assert wait_for(lambda: len(_numbers(count)) >= 2, timeout=20)
    images = str(tmp_path / "images")
    r = rt("checkpoint", "--image-path", images, "cr6")
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1, r.err
    if criu == "missing":
        assert "not found" in r.err and "criu" in r.err
    else:
        assert "criu check failed: kernel too new" in r.err
    assert rt.status("cr6") == "running"
    assert not os.path.exists(os.path.join(images, "descriptors.json"))
    n = len(_numbers(count))
    assert wait_for(lambda: len(_numbers(count)) > n + 2, timeout=20)
    r = rt("restore", "--image-path", images, "--bundle", b, "cr7")
    assert r.rc == 1 and rt.status("cr7") is None


@pytest.mark.parametrize("flags, message", [
    (["--manage-cgroups-mode", "bogus"], "invalid --manage-cgroups-mode value: bogus"),
    (["--empty-ns", "pid"], 'namespace \\"pid\\" is not supported'),  # quoted in the log
    (["--parent-path", "/abs"], "--parent-path must be relative"),
    (["--page-server", "nohost"], "Use --page-server ADDRESS:PORT to specify page server"),
    (["--page-server", "127.0.0.1:http"], "Invalid port number"),
    (["--lazy-pages", "--status-fd", "99"], "invalid --status-fd argument 99: bad file "
     "descriptor"),
])
def test_bad_flags_are_refused(ocirt, counter, flags, message):
    b, _ = counter
    _run_detached(ocirt, "cr8", b)
    r = ocirt("checkpoint", *flags, "cr8")
    assert r.rc == 1 and message in r.err, r
    assert ocirt.status("cr8") == "running"


def test_created_container_cannot_be_checkpointed(ocirt, counter):
    b, _ = counter
    with open(os.devnull, "wb") as null:
        ocirt("create", "--bundle", b, "cr9", check=True, stdout=null, stderr=null)
    r = ocirt("checkpoint", "cr9")
    assert r.rc == 1 and "Container cannot be checkpointed in created state" in r.err, r
    assert ocirt.status("cr9") == "created"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


FAKE_CRIU = r"""#!/bin/sh
# passes `check`; records what it was asked and where it ran, then fails like CRIU
[ "$1" = check ] && exit 0
dir= ; log=
for a in "$@"; do
    case "$prev" in -D) dir=$a ;; -W) work=$a ;; -o) log=$a ;; esac
    prev=$a
done
printf '%s\n' "$@" > "$RECORD.args"
cat /proc/self/cgroup > "$RECORD.cgroup"
readlink /proc/self/ns/mnt > "$RECORD.mntns"
echo "Error (criu/fake.c:1): the fake criu refuses to $1" > "${work:-$dir}/$log"
exit 1
"""


@pytest.fixture
def fake_criu(tmp_path):
    path = tmp_path / "fake-criu"
    path.write_text(FAKE_CRIU)
    path.chmod(0o755)
    return str(path), str(tmp_path / "record")


def test_failed_dump_leaves_the_container_running(ocirt, counter, tmp_path, fake_criu):
    """What ocirt hands CRIU for a dump (the init, external bind mounts, empty network
    namespace, the freezer), and a dump that fails leaves the container as it was."""
    b, count = counter
    binary, record = fake_criu
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    _run_detached(rt, "cr10", b)
    pid = rt.state("cr10")["pid"]
    images = str(tmp_path / "images")
    env = {**os.environ, "RECORD": record}
    r = rt("checkpoint", "--image-path", images, "--tcp-established", "cr10", env=env)
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "criu failed: dump: the fake criu refuses to dump" in r.err
    assert "dump.log" in r.err
    args = _read(record + ".args").split("\n")
    assert args[0] == "dump" and args[args.index("-t") + 1] == str(pid)
    assert "--external" in args and "mnt[/out]:/out" in args
    assert args[args.index("--empty-ns") + 1] == "net" and "--tcp-established" in args
    assert "--leave-running" not in args and "--freeze-cgroup" in args
    assert rt.status("cr10") == "running" and rt.state("cr10")["pid"] == pid
    assert os.listdir(images) == ["dump.log"]  # no partial images, no descriptors.json
    n = len(_numbers(count))
    assert wait_for(lambda: len(_numbers(count)) > n + 2, timeout=20)


def test_lazy_dump_hands_criu_the_page_server(ocirt, counter, tmp_path, fake_criu):
    """--lazy-pages --page-server A:P --status-fd N: CRIU's dump is told to serve the
    pages itself at A:P and to report readiness on N, which it inherits; it fails here,
    and the container runs on."""
    b, _ = counter
    binary, record = fake_criu
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    _run_detached(rt, "cr12", b)
    r_fd, w_fd = os.pipe()
    try:
        argv = rt.cmd("checkpoint", "--image-path", str(tmp_path / "images"),
                      "--lazy-pages", "--page-server", "127.0.0.1:27277", "--status-fd",
                      str(w_fd), "cr12")
        done = subprocess.run(argv, pass_fds=(w_fd,), capture_output=True, text=True,
                              env={**os.environ, "RECORD": record})
    finally:
        os.close(r_fd)
        os.close(w_fd)
    assert done.returncode == 1 and "fake criu refuses to dump" in done.stderr, done
    args = _read(record + ".args").split("\n")
    assert "--lazy-pages" in args and "--page-server" not in args
    assert args[args.index("--address") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "27277"
    assert args[args.index("--status-fd") + 1] == str(w_fd)
    assert rt.status("cr12") == "running"


def _other_cgroup(bundle: str, tmp_path) -> str:
    """The bundle again under another cgroupsPath: the dumped container lives on (frozen,
    in its cgroup) until its last page is across, and the restored one must not join it
    (runc's lazy test gives it another name and unit for the same reason)."""
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["linux"]["cgroupsPath"] = cfg["linux"]["cgroupsPath"].rstrip("/") + "-restored"
    cfg["root"]["path"] = os.path.join(bundle, cfg["root"]["path"])
    other = tmp_path / "bundle-restored"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(cfg))
    return str(other)


def _tail(path) -> str:
    try:
        return _read(str(path))[-2000:]
    except OSError as exc:
        return str(exc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_criu
@needs_lazy_pages
def test_lazy_pages_migration(runtime, counter, tmp_path):
    """runc's lazy migration: `checkpoint --lazy-pages --page-server` dumps all but the
    memory, says ready on --status-fd, and serves the pages; `criu lazy-pages` fetches
    them for `restore --lazy-pages` of a second container, which counts on; the dump
    ends once every page is across, and the first container is gone."""
    b, count = counter
    _run_detached(runtime, "lz1", b)
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=20)
    images, work = tmp_path / "images", tmp_path / "work"
    port = _free_port()
    r_fd, w_fd = os.pipe()
    with open(tmp_path / "dump.err", "wb") as err:
        dump = subprocess.Popen(runtime.cmd(
            "checkpoint", "--lazy-pages", "--page-server", f"127.0.0.1:{port}",
            "--status-fd", str(w_fd), "--work-path", str(work), "--image-path",
            str(images), "lz1"), pass_fds=(w_fd,), stdin=subprocess.DEVNULL,
            stdout=err, stderr=err)
    os.close(w_fd)
    lazy = None
    try:
        ready, _, _ = select.select([r_fd], [], [], 120)
        assert ready and os.read(r_fd, 1) == b"\0", _read(str(tmp_path / "dump.err"))
        assert (images / "inventory.img").exists()
        stopped_at = max(_numbers(count))
        lazy = subprocess.Popen([shutil.which("criu"), "lazy-pages", "--page-server",
                                 "--address", "127.0.0.1", "--port", str(port), "-D",
                                 str(images), "-o", "lazy-pages.log", "-v4"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        r = _restore(runtime, "lz2", _other_cgroup(b, tmp_path), str(images),
                     "--lazy-pages")
        assert r.rc == 0, (r.err, sorted(os.listdir(images)), *(
            _tail(images / n) for n in ("restore.log", "lazy-pages.log")))
        assert dump.wait(timeout=180) == 0, _read(str(tmp_path / "dump.err"))
        assert lazy.wait(timeout=60) == 0
    finally:
        os.close(r_fd)
        for p in (dump, lazy):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert runtime.status("lz2") == "running"
    assert runtime.status("lz1") is None
    assert _growing(count, stopped_at)
    assert min(n for n in _numbers(count) if n > stopped_at) == stopped_at + 1


def test_failed_restore_undoes_everything(ocirt, counter, tmp_path, fake_criu):
    """A restore that CRIU fails: CRIU ran in the container's new cgroup and in a mount
    namespace of its own, was given the bind mounts' sources, the stdio pipes and the
    cgroup root; afterwards no state, cgroup or mount is left."""
    b, _ = counter
    binary, record = fake_criu
    images = tmp_path / "images"
    images.mkdir()
    (images / "descriptors.json").write_text('["/dev/null", "pipe:[4242]", "/dev/null"]')
    rt = Runtime(ocirt.binary, ocirt.root, ["--criu", binary])
    env = {**os.environ, "RECORD": record}
    r = rt("restore", "-d", "--image-path", str(images), "--bundle", b, "cr11", env=env)
    assert r.rc == 1, r
    assert len(r.err.strip().splitlines()) == 1, r.err
    if not _root_can_be_made_slave():
        assert "cannot run criu restore: no mount namespace of its own" in r.err, r.err
        assert not os.path.exists(os.path.join(ocirt.root, "cr11"))
        assert _cgroup_dirs(b) == []
        pytest.skip("/ is not a mount point here (a chroot): CRIU cannot get a mount "
                    "namespace of its own, and restore refuses in one line")
    assert "criu failed: restore: the fake criu refuses to restore" in r.err
    args = _read(record + ".args").split("\n")
    assert args[0] == "restore" and "-d" in args and "--pidfile" in args
    out_dir = os.path.dirname(_count_path(b))
    assert f"mnt[/out]:{out_dir}" in args
    assert "fd[1]:pipe:[4242]" in args
    assert args[args.index("--root") + 1] == os.path.join(ocirt.root, "cr11", "criu-root")
    with open(os.path.join(b, "config.json")) as f:
        cgpath = json.load(f)["linux"]["cgroupsPath"]
    # CRIU ran in the container's cgroup, and maps the dump's root cgroup onto it
    assert cgpath in _read(record + ".cgroup")
    roots = [args[i + 1] for i, a in enumerate(args) if a == "--cgroup-root"]
    assert roots and all(cgpath in v for v in roots), roots
    assert _read(record + ".mntns") != os.readlink("/proc/self/ns/mnt") + "\n"
    assert rt.status("cr11") is None
    assert not os.path.exists(os.path.join(ocirt.root, "cr11"))
    assert _cgroup_dirs(b) == []
    with open("/proc/self/mountinfo") as f:
        assert ocirt.root not in f.read()


def _count_path(bundle: str) -> str:
    with open(os.path.join(bundle, "config.json")) as f:
        mounts = json.load(f)["mounts"]
    return next(m["source"] for m in mounts if m["destination"] == "/out") + "/count"
