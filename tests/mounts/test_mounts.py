"""Mounts as the container sees them, for each type and option ocirt handles."""

from __future__ import annotations

import os

import pytest

from tests.leaks import mounts_under

pytestmark = pytest.mark.root


def mount_line(out: str, dest: str) -> str:
    """The /proc/self/mounts line for `dest`."""
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1] == dest:
            return line
    raise AssertionError(f"{dest} not mounted in:\n{out}")


def run_out(ocirt, bundle, script, edit=None):
    r = ocirt("run", "--bundle", bundle(["sh", "-c", script], edit=edit), "m1")
    assert r.rc == 0, r
    return r.out


def test_tmpcopyup_copies_the_image_content(ocirt, bundle):
    def edit(c):
        c["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                            "options": ["tmpcopyup", "nosuid", "mode=755"]})
    out = run_out(ocirt, bundle, "cat /proc/self/mounts; echo ---; cat /etc/passwd | head -1;"
                  " ls -ld /etc; touch /etc/new && echo writable", edit)
    assert mount_line(out, "/etc").startswith("tmpfs /etc tmpfs")
    assert "root:x:0:0:root:/root:/bin/sh" in out
    assert "writable" in out


def test_tmpfs_options_and_readonly(ocirt, bundle):
    def edit(c):
        c["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                            "options": ["ro", "nosuid", "nodev", "size=1m", "mode=1777"]})
    out = run_out(ocirt, bundle, "cat /proc/self/mounts; stat -c %a /scratch; "
                  "touch /scratch/x 2>&1 || echo refused", edit)
    line = mount_line(out, "/scratch")
    assert " ro," in line and "nosuid" in line and "nodev" in line and "size=1024k" in line
    assert "1777" in out and "refused" in out


def test_bind_mounts_with_flags(ocirt, bundle, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file").write_text("hello")
    single = tmp_path / "single"
    single.write_text("one file")

    def edit(c):
        c["mounts"] += [
            {"destination": "/data", "source": str(data), "options": ["bind", "ro", "nosuid"]},
            {"destination": "/etc/single", "source": str(single), "options": ["bind"]},
            {"destination": "/rw", "source": str(data), "options": ["rbind", "rw"]},
        ]
    out = run_out(ocirt, bundle, "cat /proc/self/mounts; cat /data/file; echo; cat /etc/single;"
                  " echo; touch /data/x 2>/dev/null || echo ro-ok; touch /rw/y && echo rw-ok",
                  edit)
    assert " ro," in mount_line(out, "/data") and "nosuid" in mount_line(out, "/data")
    assert "hello" in out and "one file" in out and "ro-ok" in out and "rw-ok" in out
    assert (data / "y").exists() and not (data / "x").exists()


def test_recursive_readonly(ocirt, bundle, tmp_path):
    outer = tmp_path / "outer"
    inner = tmp_path / "inner"
    (outer / "in").mkdir(parents=True)
    inner.mkdir()
    # a bind mount below `outer` on the host, carried along by rbind
    os.system(f"mount --bind {inner} {outer}/in")
    try:
        def edit(c):
            c["mounts"].append({"destination": "/o", "source": str(outer),
                                "options": ["rbind", "rro"]})
        out = run_out(ocirt, bundle, "cat /proc/self/mounts", edit)
    finally:
        os.system(f"umount {outer}/in")
    assert " ro," in mount_line(out, "/o") and " ro," in mount_line(out, "/o/in")


def test_readonly_root_masked_and_readonly_paths(ocirt, bundle):
    def edit(c):
        c["root"]["readonly"] = True
    out = run_out(ocirt, bundle, "cat /proc/self/mounts; touch /x 2>/dev/null || echo root-ro;"
                  " cat /proc/keys | wc -c; ls /proc/acpi | wc -l;"
                  " echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro", edit)
    assert " ro," in mount_line(out, "/")
    assert "root-ro" in out and "sys-ro" in out
    assert out.splitlines()[-3:-1] == ["0", "0"]  # masked: an empty file, an empty dir
    assert " ro," in mount_line(out, "/proc/sys")


def test_devices_and_dev_symlinks(ocirt, bundle):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                  "fileMode": 0o640, "uid": 1000, "gid": 1000}]
    out = run_out(ocirt, bundle, "for d in null zero full random urandom tty fuse; do "
                  "stat -c '%n %t:%T %a %u' /dev/$d; done; for l in fd stdin ptmx; do "
                  "readlink /dev/$l; done; head -c 4 /dev/zero | wc -c", edit)
    assert "/dev/null 1:3 666 0" in out and "/dev/urandom 1:9 666 0" in out
    assert "/dev/fuse a:e5 640 1000" in out
    assert "/proc/self/fd\n/proc/self/fd/0\npts/ptmx" in out
    assert out.splitlines()[-1] == "4"


def test_propagation_options(ocirt, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()

    def edit(c):
        c["mounts"].append({"destination": "/s", "source": str(shared),
                            "options": ["rbind", "rshared"]})
    out = run_out(ocirt, bundle, "cat /proc/self/mountinfo", edit)
    line = next(line for line in out.splitlines() if line.split()[4] == "/s")
    assert "shared:" in line


def test_mount_destination_symlinks_resolve_inside_the_rootfs(ocirt, bundle, tmp_path):
    """A destination through absolute or dangling symlinks in the image lands inside the
    rootfs; nothing is created or mounted on the host (CVE-2021-30465, CVE-2024-45310)."""
    host_target = tmp_path / "host-target"
    b = bundle(["sh", "-c", "cat /proc/self/mounts; ls /inside-abs /new-dir"], edit=lambda c: c[
        "mounts"].extend([
            {"destination": "/abs/mnt", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dangling/deeper", "type": "tmpfs", "source": "tmpfs"},
        ]))
    os.symlink(str(host_target), os.path.join(b, "rootfs", "abs"))  # absolute, to a host path
    os.symlink("/new-dir", os.path.join(b, "rootfs", "dangling"))
    os.mkdir(os.path.join(b, "rootfs", "inside-abs"))
    r = ocirt("run", "--bundle", b, "m1")
    assert r.rc == 0, r
    assert not host_target.exists()
    assert os.path.isdir(os.path.join(b, "rootfs", str(host_target).lstrip("/"), "mnt"))
    assert os.path.isdir(os.path.join(b, "rootfs", "new-dir", "deeper"))
    assert mounts_under(str(tmp_path)) == []


def test_proc_as_a_symlink_is_refused(ocirt, bundle):
    """CVE-2023-27561/28642: procfs only on an ordinary directory."""
    b = bundle(["true"])
    proc = os.path.join(b, "rootfs", "proc")
    os.rmdir(proc)
    os.symlink("/tmp", proc)
    r = ocirt("run", "--bundle", b, "m1")
    assert r.rc == 1 and "must be mounted on ordinary directory" in r.err
    assert ocirt.ids() == []


def test_tmpcopyup_keeps_the_mode_option(ocirt, bundle):
    """podman's --tmpfs /scratch:mode=1777 (with tmpcopyup) on a path the image lacks."""
    def edit(c):
        c["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                            "options": ["rw", "size=1m", "mode=1777", "tmpcopyup"]})
    out = run_out(ocirt, bundle, "stat -c %a /scratch; echo x > /scratch/f && echo ok", edit)
    assert out.split() == ["1777", "ok"]
