"""mounts: each type and option, order, propagation, masked and read-only paths, the root,
and devices; seen from inside (/proc/self/mountinfo, stat) and from the host."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

INFO = ["cat", "/proc/self/mountinfo"]


def _volume(h, name="volume"):
    src = h.mkdir(name)
    with open(os.path.join(src, "file"), "w") as f:
        f.write("from-the-host")
    os.makedirs(os.path.join(src, "sub"), exist_ok=True)
    return src


def _with_mounts(*mounts, root_ro=None, extra=None):
    def edit(cfg):
        cfg["mounts"] += list(mounts)
        if root_ro is not None:
            cfg["root"]["readonly"] = root_ro
        if extra:
            extra(cfg)
    return edit


def _bind(src, dest, *options):
    return {"destination": dest, "type": "bind", "source": src,
            "options": ["rbind", *options]}


def _mount(out, dest):
    m = procfs.mount_at(procfs.parse_mountinfo(out), dest)
    assert m is not None, f"nothing mounted at {dest}:\n{out}"
    return m


@case("MT-01", "config.md#mounts", "MUST")
def test_bind_mount(h):
    """a bind mount shows the source's files at the destination"""
    src = _volume(h)
    b = h.bundle(["sh", "-c", "cat /data/file; echo; cat /proc/self/mountinfo"],
                 edit=_with_mounts(_bind(src, "/data")))
    out = h.output(b)
    assert out.startswith("from-the-host")
    m = _mount(out, "/data")
    assert m.root.endswith(src) or src.endswith(m.root), m


@case("MT-02", "config.md#mounts options ro", "MUST")
def test_bind_read_only(h):
    """option ro makes the mount read-only; writes fail"""
    src = _volume(h)
    b = h.bundle(["sh", "-c", "touch /data/new && echo wrote; cat /proc/self/mountinfo"],
                 edit=_with_mounts(_bind(src, "/data", "ro")))
    out = h.output(b)
    assert "wrote" not in out and not os.path.exists(os.path.join(src, "new"))
    assert "ro" in _mount(out, "/data").options


@pytest.mark.parametrize("option", ["nosuid", "nodev", "noexec", "noatime"])
@case("MT-03", "config.md#mounts options", "MUST")
def test_mount_flag(h, option):
    """per-mount flags (nosuid, nodev, noexec, noatime) are applied"""
    src = _volume(h)
    b = h.bundle(INFO, edit=_with_mounts(_bind(src, "/data", option)))
    assert option in _mount(h.output(b), "/data").options


@case("MT-04", "config.md#mounts options noexec", "MUST")
def test_noexec_enforced(h):
    """a program on a noexec mount cannot be executed"""
    src = _volume(h)
    tool = os.path.join(src, "tool")
    with open(tool, "w") as f:
        f.write("#!/bin/sh\necho tool-ran\n")
    os.chmod(tool, 0o755)
    b = h.bundle(["sh", "-c", "/data/tool; echo rc=$?"],
                 edit=_with_mounts(_bind(src, "/data", "noexec")))
    out = h.output(b)
    assert "tool-ran" not in out and "rc=126" in out, out


@case("MT-05", "config.md#mounts", "MUST")
def test_tmpfs_options(h):
    """a tmpfs mount gets its size and mode options"""
    tmpfs = {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "size=2048k", "mode=1750"]}
    b = h.bundle(["sh", "-c", "stat -c mode=%a /scratch; cat /proc/self/mountinfo"],
                 edit=_with_mounts(tmpfs))
    out = h.output(b)
    assert "mode=1750" in out
    m = _mount(out, "/scratch")
    assert m.fstype == "tmpfs" and "size=2048k" in m.super_options and "nosuid" in m.options


@case("MT-06", "config.md#mounts", "MUST")
def test_mount_order(h):
    """mounts are made in the listed order: a later one covers an earlier one"""
    src = _volume(h)
    tmpfs = {"destination": "/data", "type": "tmpfs", "source": "tmpfs"}
    check = ["sh", "-c", "ls -A /data | tr '\\n' ' '; echo end"]
    bind_last = h.output(h.bundle(check, edit=_with_mounts(tmpfs, _bind(src, "/data"))))
    assert "file" in bind_last, bind_last
    tmpfs_last = h.output(h.bundle(check, edit=_with_mounts(_bind(src, "/data"), tmpfs)))
    assert tmpfs_last.strip() == "end", tmpfs_last


@case("MT-07", "runc: mounts", "RUNC")
def test_missing_destination_created(h):
    """a destination missing from the rootfs is created (directory, or file for a file)"""
    src = _volume(h)
    b = h.bundle(["sh", "-c", "cat /deep/new/dir/file; echo; cat /etc/conf-file"],
                 edit=_with_mounts(_bind(src, "/deep/new/dir"),
                                   _bind(os.path.join(src, "file"), "/etc/conf-file")))
    out = h.output(b)
    assert out.split() == ["from-the-host", "from-the-host"]


@pytest.mark.parametrize("kind", ["rbind", "bind"])
@case("MT-08", "config.md#mounts options bind/rbind", "MUST")
def test_recursive_bind(h, kind):
    """rbind carries the source's submounts along; bind does not"""
    src = _volume(h)
    sub = os.path.join(src, "sub")
    h.sandbox_mount(["mount", "-t", "tmpfs", "-o", "size=1m", "conformance-sub", sub], sub)
    h.in_sandbox(["sh", "-c", f"echo in-submount > {sub}/marker"])
    mount = {"destination": "/data", "type": "bind", "source": src, "options": [kind]}
    out = h.output(h.bundle(["sh", "-c", "cat /data/sub/marker; echo end"],
                            edit=_with_mounts(mount)))
    assert ("in-submount" in out) == (kind == "rbind"), out


@pytest.mark.parametrize("prop", [
    "private",
    pytest.param("shared", marks=deviation(
        "runc", "runc 1.1.5 applies rootfsPropagation to the old / before binding the rootfs "
        "under a private parent, so the container's / stays private (fixed in later runc, "
        "mounts_propagation.bats)")),
    pytest.param("unbindable", marks=deviation(
        "runc", "runc 1.1.5 fails: the rbind of an unbindable rootfs returns EINVAL"))])
@case("MT-09", "config-linux.md#rootfs-mount-propagation", "MUST")
def test_rootfs_propagation(h, prop):
    """rootfsPropagation is the propagation of the container's / (rootfs from a shared mount)"""
    b = h.bundle(INFO, edit=lambda cfg: cfg["linux"].update(rootfsPropagation=prop))
    h.shared_mount(b)
    out = h.output(b)
    assert _mount(out, "/").propagation == prop, out


_CRUN_PROP = deviation("crun", "crun 1.8.1 leaves the bind mount private here (no shared or "
                                "master tag) whatever the propagation option says")


@pytest.mark.parametrize("prop,expected", [
    ("rprivate", "private"), pytest.param("rslave", "slave", marks=_CRUN_PROP),
    pytest.param("rshared", "shared", marks=_CRUN_PROP), ("private", "private")])
@case("MT-10", "config.md#mounts options propagation", "MUST")
def test_mount_propagation(h, prop, expected):
    """a bind mount's propagation option is applied (source is a shared mount)"""
    src = _volume(h)
    h.shared_mount(src)
    b = h.bundle(INFO, edit=_with_mounts(_bind(src, "/data", prop)))
    out = h.output(b)
    assert _mount(out, "/data").propagation == expected, out


@case("MT-11", "config-linux.md#masked-paths", "MUST")
def test_masked_files(h):
    """masked files read as empty (a /dev/null bind or equivalent)"""
    files = [p for p in ("/proc/timer_list", "/proc/sched_debug", "/proc/keys",
                         "/proc/latency_stats", "/proc/kcore") if os.path.isfile(p)]
    if not files:
        pytest.skip("none of the default masked files exists on this kernel")
    script = "; ".join(f"echo {p}=$(wc -c < {p}):$(stat -c '%t:%T' {p})" for p in files)
    out = h.output(h.bundle(["sh", "-c", script]))
    for p in files:
        size_dev = out.split(f"{p}=")[1].split()[0]
        size, dev = size_dev.split(":", 1)
        assert size.strip() == "0", f"{p} readable: {out}"
        assert dev in ("1:3", "0:0"), f"{p} is not /dev/null: {out}"


@case("MT-12", "config-linux.md#masked-paths", "MUST")
def test_masked_directories(h):
    """masked directories are empty and read-only"""
    dirs = [p for p in ("/sys/firmware", "/proc/acpi", "/proc/scsi") if os.path.isdir(p)]
    if not dirs:
        pytest.skip("none of the default masked directories exists here")
    script = "; ".join(f"echo {d}=[$(ls -A {d})]; touch {d}/x 2>/dev/null && echo {d}-writable"
                       for d in dirs) + "; true"
    out = h.output(h.bundle(["sh", "-c", script]))
    for d in dirs:
        assert f"{d}=[]" in out and f"{d}-writable" not in out, out


@case("MT-13", "config-linux.md#readonly-paths", "MUST")
def test_readonly_paths(h):
    """readonlyPaths are mounted read-only"""
    script = ("echo x > /proc/sys/kernel/hostname 2>/dev/null && echo wrote; "
              "cat /proc/self/mountinfo")
    out = h.output(h.bundle(["sh", "-c", script]))
    assert "wrote" not in out
    assert "ro" in _mount(out, "/proc/sys").options


@case("MT-14", "config.md#root readonly", "MUST")
def test_root_readonly(h):
    """root.readonly makes / read-only while other mounts stay writable"""
    tmpfs = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
    script = ("touch /rootfile 2>/dev/null && echo root-writable; "
              "touch /tmp/ok && echo tmp-writable; cat /proc/self/mountinfo")
    b = h.bundle(["sh", "-c", script], edit=_with_mounts(tmpfs, root_ro=True))
    out = h.output(b)
    assert "root-writable" not in out and "tmp-writable" in out
    assert "ro" in _mount(out, "/").options


@case("MT-15", "config.md#root", "MUST")
def test_root_is_bundle_rootfs(h):
    """/ is the bundle's rootfs and the host's files are out of reach"""
    def rootfs(path):
        with open(os.path.join(path, "conformance-root-marker"), "w") as f:
            f.write("rootfs")
    b = h.bundle(["sh", "-c", f"cat /conformance-root-marker; echo; ls {h.tmp} || true"],
                 rootfs=rootfs)
    out = h.output(b)
    assert out.startswith("rootfs") and "config.json" not in out


DEFAULT_DEVICES = {"/dev/null": "1:3", "/dev/zero": "1:5", "/dev/full": "1:7",
                   "/dev/random": "1:8", "/dev/urandom": "1:9", "/dev/tty": "5:0"}


@case("MT-16", "config-linux.md#default-devices", "MUST")
def test_default_devices(h):
    """null, zero, full, random, urandom and tty are character devices; ptmx leads to pts"""
    script = "; ".join(f"echo {d}=$(stat -c '%F:%t:%T' {d})" for d in DEFAULT_DEVICES)
    script += "; echo ptmx=$(stat -L -c '%t:%T' /dev/ptmx); readlink /dev/ptmx || true"
    out = h.output(h.bundle(["sh", "-c", script]))
    for dev, nums in DEFAULT_DEVICES.items():
        major, minor = nums.split(":")
        assert f"{dev}=character special file:{int(major):x}:{int(minor):x}" in out, out
    assert "ptmx=5:2" in out, out


@case("MT-17", "runc: /dev symlinks", "RUNC")
def test_dev_symlinks(h):
    """/dev/fd, /dev/stdin, /dev/stdout and /dev/stderr point into /proc/self/fd"""
    out = h.output(h.bundle(["sh", "-c", "for l in fd stdin stdout stderr; do "
                                         "echo $l=$(readlink /dev/$l); done"]))
    for line in ("fd=/proc/self/fd", "stdin=/proc/self/fd/0", "stdout=/proc/self/fd/1",
                 "stderr=/proc/self/fd/2"):
        assert line in out, out


@pytest.mark.parametrize("kind,mode,nums", [("c", 0o600, (1, 7)), ("b", 0o640, (7, 0))])
@case("MT-18", "config-linux.md#devices", "MUST")
def test_linux_devices(h, kind, mode, nums):
    """linux.devices nodes exist with their type, numbers, mode and owner"""
    dev = {"path": "/dev/conformance-dev", "type": kind, "major": nums[0], "minor": nums[1],
           "fileMode": mode, "uid": 1000, "gid": 5}
    b = h.bundle(["stat", "-c", "%F %t:%T %a %u:%g", "/dev/conformance-dev"],
                 edit=lambda cfg: cfg["linux"].update(devices=[dev]))
    kind_name = "character special file" if kind == "c" else "block special file"
    expected = f"{kind_name} {nums[0]:x}:{nums[1]:x} {mode:o} 1000:5"
    assert h.output(b).strip() == expected


@deviation("runc", "runc 1.1.5 keeps the existing file and starts the container")
@deviation("crun", "crun 1.8.1 keeps the existing file and starts the container")
@case("MT-19", "config-linux.md#devices", "MUST")
def test_device_over_other_file_fails(h):
    """a device whose path holds a different file is an error"""
    dev = {"path": "/etc/passwd", "type": "c", "major": 1, "minor": 3}
    r = h.run(h.bundle(["true"], edit=lambda cfg: cfg["linux"].update(devices=[dev])))
    assert r.rc != 0, r


@pytest.mark.parametrize("dest,fstype", [("/proc", "proc"), ("/dev", "tmpfs"),
                                         ("/dev/pts", "devpts"), ("/dev/shm", "tmpfs"),
                                         ("/dev/mqueue", "mqueue"), ("/sys", "sysfs")])
@case("MT-20", "config-linux.md#default-filesystems", "SHOULD")
def test_filesystem_types(h, dest, fstype):
    """the default config's filesystems are mounted with their types"""
    assert _mount(h.output(h.bundle(INFO)), dest).fstype == fstype


@case("MT-21", "runc: cgroup mount", "RUNC")
def test_cgroup_mount(h):
    """a mount of type cgroup shows the container's hierarchies, read-only"""
    cg = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
    out = h.output(h.bundle(INFO, edit=_with_mounts(cg)))
    if cgroupfs.is_unified():  # the container's own cgroup, one cgroup2 mount on top
        mounts = [m for m in procfs.parse_mountinfo(out)
                  if m.mountpoint == "/sys/fs/cgroup"][-1:]
        assert [m.fstype for m in mounts] == ["cgroup2"], out
    else:
        mounts = [m for m in procfs.parse_mountinfo(out)
                  if m.mountpoint.startswith("/sys/fs/cgroup/") and m.fstype == "cgroup"]
        assert any(m.mountpoint == "/sys/fs/cgroup/memory" for m in mounts), out
    assert all("ro" in m.options for m in mounts), out


@case("MT-22", "config.md#mounts destination", "MUST")
def test_relative_destination(h):
    """a relative destination is taken relative to /"""
    src = _volume(h)
    b = h.bundle(["cat", "/reldata/file"], edit=_with_mounts(_bind(src, "reldata")))
    assert h.output(b).strip() == "from-the-host"


@case("MT-23", "config.md#mounts options rro", "SHOULD")
def test_recursive_read_only(h):
    """rro makes the mount and its submounts read-only"""
    src = _volume(h)
    sub = os.path.join(src, "sub")
    h.sandbox_mount(["mount", "-t", "tmpfs", "-o", "size=1m", "conformance-sub", sub], sub)
    b = h.bundle(["sh", "-c", "touch /data/sub/x && echo sub-writable; echo end"],
                 edit=_with_mounts(_bind(src, "/data", "rro")))
    out = h.output(b)
    assert "sub-writable" not in out, out


@case("MT-24", "config-linux.md#namespaces mount", "MUST")
def test_mounts_stay_in_container(h):
    """the container's mounts do not appear in the runtime's mount namespace"""
    c = h.start(h.bundle(["sleep", "1000"], edit=_with_mounts(
        {"destination": "/scratch", "type": "tmpfs", "source": "conformance-tmpfs"})))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    inside = procfs.mountinfo(c.pid)
    assert any(m.source == "conformance-tmpfs" for m in inside)
    outside = procfs.mountinfo(h.info.sandbox.pid if h.info.sandbox else "self")
    assert not any(m.source == "conformance-tmpfs" for m in outside)
    assert not any(c.bundle in m.mountpoint for m in outside)


# --- idmapped mounts ---------------------------------------------------------------------

USERNS_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]
STAT = "stat -c '%n %u:%g'"


def _owned_volume(h, name):
    """A directory with files owned by 0:0 and 5:6 on disk, where any uid can reach it
    (a user-namespaced container's root must traverse the path to bind it)."""
    parent = tempfile.mkdtemp(prefix=f"conf-{name}-")
    os.chmod(parent, 0o755)
    h.closers.append(lambda: shutil.rmtree(parent, ignore_errors=True))
    src = os.path.join(parent, "volume")
    os.mkdir(src, 0o755)
    for fname, owner in (("root-file", (0, 0)), ("five-file", (5, 6))):
        path = os.path.join(src, fname)
        with open(path, "w") as f:
            f.write(fname)
        os.chown(path, *owner)
    return src


def _userns(cfg):
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = USERNS_MAP
    cfg["linux"]["gidMappings"] = USERNS_MAP


def _owners(out):
    """{path: "uid:gid"} from `stat -c '%n %u:%g'` lines."""
    return dict(line.split() for line in out.splitlines() if line.startswith("/"))


@needs("userns")
@deviation("runc", "runc 1.1.5 predates idmapped mounts (runc 1.2): it ignores the mappings")
@case("MT-25", "config.md#mounts uidMappings", "MUST")
def test_idmapped_bind_mount(h):
    """a bind mount's uidMappings/gidMappings shift its owners: inside, on-disk 0:0 is
    1000:2000 and 5:6 is 1005:2006; a file the container's uid 1000 writes is 0:0 on disk"""
    src = _owned_volume(h, "idmapped")
    mount = _bind(src, "/m", "idmap")
    mount["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 10}]
    mount["gidMappings"] = [{"containerID": 0, "hostID": 2000, "size": 10}]

    def as_user(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 2000}
    out = h.output(h.bundle(["sh", "-c", f"{STAT} /m/root-file /m/five-file; "
                                         f"touch /m/new && echo written; cat /proc/self/mountinfo"],
                            edit=_with_mounts(mount, extra=as_user)))
    assert _owners(out) == {"/m/root-file": "1000:2000", "/m/five-file": "1005:2006"}, out
    assert "written" in out
    assert "idmapped" in _mount(out, "/m").options
    st = os.stat(os.path.join(src, "new"))
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(os.path.join(src, "five-file"))
    assert (st.st_uid, st.st_gid) == (5, 6)  # the host's view is unchanged


@needs("userns")
@deviation("runc", "runc 1.1.5 predates idmapped mounts (runc 1.2): files show as nobody")
@case("MT-26", "config.md#mounts idmap", "MAY")
def test_idmap_takes_the_container_mapping(h):
    """`idmap` without mappings in a user-namespaced container uses its mappings: files
    show their on-disk owners inside (a plain bind shows them as nobody), and root's new
    file is root's on disk"""
    src = _owned_volume(h, "idmap-userns")
    plain = _owned_volume(h, "plain-userns")
    script = f"{STAT} /tmp/m/root-file /tmp/m/five-file /tmp/p/root-file; touch /tmp/m/new"
    out = h.output(h.bundle(
        ["sh", "-c", script],
        edit=_with_mounts(_bind(src, "/tmp/m", "idmap"), _bind(plain, "/tmp/p"), extra=_userns),
        public=True))
    assert _owners(out) == {"/tmp/m/root-file": "0:0", "/tmp/m/five-file": "5:6",
                            "/tmp/p/root-file": "65534:65534"}, out
    st = os.stat(os.path.join(src, "new"))
    assert (st.st_uid, st.st_gid) == (0, 0)


@needs("userns")
@deviation("runc", "runc 1.1.5 predates idmapped mounts (runc 1.2)")
@deviation("crun", "crun 1.8.1 drops the submounts of an idmapped rbind: the files in them "
                   "are missing inside")
@case("MT-27", "config.md#mounts ridmap", "MUST")
def test_ridmap_maps_submounts(h):
    """`ridmap` idmaps the submounts of an rbind too; `idmap` only the mount itself"""
    mounts = []
    for name, option in (("r", "ridmap"), ("i", "idmap")):
        src = _owned_volume(h, f"idmap-{name}")
        sub = os.path.join(src, "sub")
        os.makedirs(sub, exist_ok=True)
        # The submount: a bind mount from the volume's own file system (a tmpfs one
        # could not be idmapped before Linux 6.3).
        other = os.path.join(os.path.dirname(src), "other")
        os.mkdir(other, 0o755)
        h.sandbox_mount(["mount", "--bind", other, sub], sub)
        r = h.in_sandbox(["sh", "-c", f"echo in the submount > {sub}/sub-file"])
        assert r.returncode == 0, r.stderr
        mounts.append(_bind(src, f"/tmp/{name}", option))
    out = h.output(h.bundle(["sh", "-c", f"{STAT} /tmp/r/sub/sub-file /tmp/i/sub/sub-file"],
                            edit=_with_mounts(*mounts, extra=_userns), public=True))
    assert _owners(out) == {"/tmp/r/sub/sub-file": "0:0",
                            "/tmp/i/sub/sub-file": "65534:65534"}, out


@deviation("runc", "runc 1.1.5 predates idmapped mounts (runc 1.2): it ignores the option")
@case("MT-28", "config.md#mounts idmap", "MUST")
def test_idmap_without_any_mapping_fails(h):
    """`idmap` with no mappings in a container without a user namespace is an error"""
    src = _owned_volume(h, "idmap-nomap")
    c = h.create(h.bundle(["true"], edit=_with_mounts(_bind(src, "/m", "idmap"))),
                 check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []
