"""security: the runtime-agnostic attack recipes of ../shared/docs/security.md.

Each case sets up the hostile bundle or environment of a past runtime CVE and checks
that the container stays inside its root. Nothing here writes to the attacked host
files; the checks only read them. Host paths the attacks aim at carry the session token
and are removed afterwards if a vulnerable runtime created them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from conformance import procfs
from conformance.cases import case, deviation
from conformance.runner import wait_for

pytestmark = pytest.mark.root

# fds the shells of this project's machines carry; a runtime must not pass them on.
STRAY_FDS = (10, 251)


def _escape_target(h, tag):
    """A host path an attack aims at; removed at the end if a runtime created it."""
    target = f"/tmp/conf-escape-{h.info.token}-{tag}"
    h.closers.append(lambda: shutil.rmtree(target, ignore_errors=True))
    assert not os.path.exists(target)
    return target


def _with_stray_fds(h, *args):
    """argv running the runtime with host directories open on the stray fds."""
    opens = " ".join(f"{fd}</" for fd in STRAY_FDS)
    return ["/bin/bash", "-c", f'exec {opens} && exec "$@"', "bash", *h.rt.cmd(*args)]


def _detached(h, *args):
    """Run a create/run --detach with the stray fds; the container keeps our files, so
    its stdio are files, not pipes we would wait on."""
    with open(h.path("out"), "wb") as out, open(h.path("err"), "w+b") as err:
        r = subprocess.run(_with_stray_fds(h, *args), stdout=out, stderr=err,
                           stdin=subprocess.DEVNULL, timeout=60)
        err.seek(0)
        r.stderr = err.read().decode(errors="replace")
    return r


def _run_argv(argv, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@case("SE-01", "security.md CVE-2024-21626", "SEC")
def test_no_fd_leak_to_process(h):
    """fds the runtime inherited (host directories) never reach the container process"""
    b = h.bundle(["sleep", "1000"])
    cid = h.cid()
    r = _detached(h, "run", "--detach", "--bundle", b, cid)
    assert r.returncode == 0, r.stderr
    pid = h.rt.state(cid)["pid"]
    h.track(pid)
    assert wait_for(lambda: procfs.cmdline(pid) == ["sleep", "1000"], 5)
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    assert fds == [0, 1, 2], {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}


ALLOWED_PREFIXES = ("pipe:", "socket:", "anon_inode:", "/dev/null", "/dev/pts/",
                    "/memfd:", "/dev/ptmx")


@deviation("crun", "crun 1.8.1 keeps the fds it inherited (here host / on fds 10 and 251) "
           "open in the created init; it closes them only at exec (SE-01 passes)")
@case("SE-02", "security.md CVE-2024-21626", "SEC")
def test_created_init_fds(h):
    """in created state the init holds no fd to a host directory or host file"""
    b = h.bundle(["sleep", "1000"])
    cid = h.cid()
    r = _detached(h, "create", "--bundle", b, cid)
    assert r.returncode == 0, r.stderr
    pid = h.rt.state(cid)["pid"]
    h.track(pid)
    bad = {}
    state_files = _inodes(h.rt.root)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if int(fd) <= 2:
            continue
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(ALLOWED_PREFIXES) or (st.st_dev, st.st_ino) in state_files:
            continue  # runtime state such as runc's exec fifo (by inode: a chroot shows
            # the path with its own prefix)
        if target.startswith(os.path.join(b, "rootfs") + "/"):
            continue
        bad[fd] = target
    assert not bad, f"fds of the created init reach the host: {bad}"


def _inodes(directory: str) -> set[tuple[int, int]]:
    found = set()
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            try:
                st = os.stat(os.path.join(top, name), follow_symlinks=False)
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found


@case("SE-03", "security.md CVE-2024-21626", "SEC")
def test_hostile_cwd(h):
    """process.cwd = /proc/self/fd/N never starts the process outside the container"""
    escapes = []
    for n in (*range(3, 12), *STRAY_FDS):
        def edit(cfg, n=n):
            cfg["process"]["cwd"] = f"/proc/self/fd/{n}"
        b = h.bundle(["sh", "-c", "pwd -P; ls -a"], edit=edit)
        r = _run_argv(_with_stray_fds(h, "run", "--bundle", b, h.cid()))
        if r.returncode == 0 and ("(unreachable)" in r.stdout or "rootfs" in r.stdout.split()
                                  or "config.json" in r.stdout.split()):
            escapes.append((n, r.stdout[:200]))
    assert not escapes, f"cwd escaped the container: {escapes}"


def _symlinked(h, name, target):
    def rootfs(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        os.symlink(target, p)
    return rootfs


@pytest.mark.parametrize("name", ["proc", "sys"])
@case("SE-04", "security.md CVE-2023-27561/CVE-2023-28642", "SEC")
def test_symlinked_proc_sys(h, name):
    """a rootfs whose /proc or /sys is a symlink is refused (never mounted through it)"""
    target = _escape_target(h, name)
    os.makedirs(target)
    b = h.bundle(["true"], rootfs=_symlinked(h, name, target))
    c = h.create(b, check=False)
    assert c.result.rc != 0, "create followed a symlinked mount point"
    assert os.listdir(target) == []


@deviation("runc", "runc 1.1.5 creates /dev/{fd,stdin,stdout,stderr,ptmx} symlinks through a "
           "symlinked /dev (CVE-2026-41579, fixed in runc 1.3.6/1.4.3)")
@case("SE-05", "security.md CVE-2026-41579", "SEC")
def test_symlinked_dev(h):
    """a rootfs whose /dev is a symlink to a host directory leaves that directory empty"""
    target = _escape_target(h, "dev")
    os.makedirs(target)
    b = h.bundle(["true"], rootfs=_symlinked(h, "dev", target))
    h.run(b)
    assert os.listdir(target) == [], f"device setup wrote to the host: {os.listdir(target)}"


@deviation("runc", "runc 1.1.5 (no CVE-2025-31133 fix) binds whatever /dev/null points to "
           "over the masked paths, and the container's stdout/stderr land in that file "
           "(pointed at core_pattern, the container's output rewrote the host's)")
@deviation("crun", "crun 1.8.1 reopens the container's stdout/stderr through the symlinked "
           "/dev/null, so the container's output lands in the file it points to")
@case("SE-06", "security.md CVE-2025-31133", "SEC")
def test_dev_null_symlink_masking(h):
    """with the rootfs's /dev/null a symlink to another file, masked paths still read as
    nothing (the runtime verifies /dev/null instead of binding whatever it points to)"""
    # The real attack points /dev/null at /proc/sys/kernel/core_pattern; a vulnerable
    # runtime then makes that host sysctl writable (runc 1.1.5 let this suite overwrite
    # it), so the suite points it at a harmless file in the rootfs instead: the flaw,
    # binding an unverified /dev/null, shows the same way.
    masked = [p for p in ("/proc/timer_list", "/proc/keys", "/proc/sched_debug")
              if os.path.isfile(p)]

    def rootfs(path):
        with open(os.path.join(path, "conformance-secret"), "w") as f:
            f.write("SECRET\n")
        os.symlink("/conformance-secret", os.path.join(path, "dev", "null"))

    def edit(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        cfg["linux"]["maskedPaths"] = masked
    script = "; ".join(f"echo {p}=$(cat {p} | wc -c)" for p in masked) + "; true"
    b = h.bundle(["sh", "-c", script], edit=edit, rootfs=rootfs)
    r = h.run(b)
    with open(os.path.join(b, "rootfs", "conformance-secret")) as f:
        assert f.read() == "SECRET\n", "the file behind the fake /dev/null was written"
    if r.rc == 0:
        for p in masked:
            assert f"{p}=0" in r.out, f"masked {p} shows the fake /dev/null's file: {r.out}"


@pytest.mark.parametrize("style", ["absolute", "relative"])
@case("SE-07", "security.md CVE-2024-45310/CVE-2021-30465", "SEC")
def test_mount_destination_through_symlink(h, style):
    """a mount destination through a symlink to a host path stays inside the rootfs"""
    target = _escape_target(h, f"dest-{style}")
    link = target if style == "absolute" else "../../../../../../../.." + target

    def edit(cfg):
        cfg["mounts"].append({"destination": "/escape/sub", "type": "tmpfs",
                              "source": "tmpfs"})
    h.run(h.bundle(["true"], edit=edit, rootfs=_symlinked(h, "escape", link)))
    assert not os.path.exists(target), f"the runtime created {target} on the host"


@case("SE-08", "security.md CVE-2019-5736", "SEC")
def test_init_exe_not_writable_host_file(h):
    """the created init's /proc/<pid>/exe is no writable host binary (sealed copy or ro)"""
    c = h.create(h.bundle(["sleep", "1000"]))
    exe = f"/proc/{c.pid}/exe"
    target = os.readlink(exe)
    if "(deleted)" in target or target.startswith("/memfd:"):
        return
    st = os.statvfs(exe)
    assert st.f_flag & os.ST_RDONLY, f"init runs {target}, a writable host file"


@pytest.mark.parametrize("by", ["image", "hook"])
@deviation("runc", "runc 1.1.5 (before the CVE-2025-52565 fix) opens and mounts /dev/console "
                   "through the symlink: the console pty is bind-mounted on its target")
@deviation("crun", "crun 1.8.1 mounts the console pty through a symlinked /dev/console, "
                   "on the file it points to")
@case("SE-09", "security.md CVE-2025-52565", "SEC")
def test_console_symlink_is_not_followed(h, by):
    """a /dev/console that the image ships, or a createContainer hook makes, as a symlink
    to another file: the console pty is never mounted on that file (the runtime refuses,
    or /dev/console is a devpts node of its own)"""
    def rootfs(path):
        with open(os.path.join(path, "conformance-target"), "w") as f:
            f.write("TARGET\n")
        if by == "image":
            os.symlink("/conformance-target", os.path.join(path, "dev", "console"))
    rx = h.console()
    b_holder = {}

    def edit(cfg):
        cfg["process"]["terminal"] = True
        if by == "image":  # the image's /dev, not a tmpfs over it
            cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev"]
        else:
            link = os.path.join(b_holder["rootfs"], "dev", "console")
            cfg["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": [
                "sh", "-c", f"ln -sf /conformance-target {link}"]}]}
    script = ("echo console=$(stat -L -c '%F:%t' /dev/console); "
              "echo target=$(stat -c '%F' /conformance-target); "
              "echo mounted=$(grep -c conformance-target /proc/self/mountinfo); echo end-of-test")
    b_holder["rootfs"] = os.path.join(h.path(f"bundle{h.counter[0] + 1}"), "rootfs")
    b = h.bundle(["sh", "-c", script], edit=edit, rootfs=rootfs)
    assert b_holder["rootfs"] == os.path.join(b, "rootfs")
    c = h.create(b, extra=("--console-socket", rx.path), check=False)
    if c.result.ok and c.start(check=False).ok:
        out = rx.wait_output("end-of-test")
        assert "console=character special file:88" in out, out
        assert "target=regular file" in out and "mounted=0" in out, out
    with open(os.path.join(b, "rootfs", "conformance-target")) as f:
        assert f.read() == "TARGET\n"


def _rootless_user():
    import pwd

    for name in ("ocirt-test", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("no unprivileged user to run a rootless container as")


@pytest.mark.parametrize("layout", ["spec-rootless", pytest.param("sys-rbind-only", marks=[
    deviation("runc", "runc 1.1.5 makes only the top of a read-only rbind of /sys read-only: "
                      "without a cgroup mount over it, the host's cgroupfs below stays writable"),
    deviation("crun", "crun 1.8.1, like runc 1.1.5, leaves the host's cgroupfs below a "
                      "read-only rbind of /sys writable")])])
@case("SE-10", "security.md CVE-2023-25809", "SEC")
def test_rootless_cgroupfs_not_writable(h, layout):
    """rootless (an unprivileged user, a user namespace, no cgroup namespace, /sys
    rbind-mounted read-only as `runc spec --rootless` writes it, with or without its
    cgroup mount) with a cgroup delegated to that
    user on the host: from inside, every /sys/fs/cgroup mount is read-only and no cgroup
    can be made anywhere in reach"""
    user = _rootless_user()
    delegated = h.cgroup_name("deleg")
    made = _delegate_cgroups(delegated, user.pw_uid, user.pw_gid)
    h.closers.append(lambda: [_remove_cgroup(d) for d in reversed(made)])
    evil = f"conf-evil-{h.info.token}"
    # Tries everywhere; only a directory that appears in a host cgroup tree counts (a
    # tmpfs the runtime made for the container is the container's to write), and only
    # the cgroupfs mounts in view must be read-only (a covered one cannot be reached).
    script = (f"for d in $(find /sys/fs/cgroup -maxdepth 3 -type d 2>/dev/null); do "
              f"mkdir $d/{evil} 2>/dev/null && echo MADE $d; done; "
              "grep ' /sys/fs/cgroup' /proc/mounts; echo end-of-test")

    def edit(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in
                         ("/sys", "/sys/fs/cgroup")]
        for m in cfg["mounts"]:  # only root is mapped: no gid=5 for devpts
            m["options"] = [o for o in m.get("options", []) if not o.startswith("gid=")]
        cfg["mounts"] += [
            {"destination": "/sys", "type": "none", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
        if layout == "spec-rootless":  # `runc spec --rootless` adds a cgroup mount
            cfg["mounts"].append(
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
        linux = cfg["linux"]
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
        linux["uidMappings"] = [{"containerID": 0, "hostID": user.pw_uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": user.pw_gid, "size": 1}]
        for key in ("resources", "cgroupsPath", "seccomp"):
            linux.pop(key, None)
    b = h.bundle(["sh", "-c", script], edit=edit, public=True)
    state = tempfile.mkdtemp(prefix="conf-rootless-")
    h.closers.append(lambda: shutil.rmtree(state, ignore_errors=True))
    os.chown(state, user.pw_uid, user.pw_gid)
    argv = [*h.info.prefix(b), "runuser", "-u", user.pw_name, "--", "env",
            f"XDG_RUNTIME_DIR={state}", h.info.binary, "--root", state, "run", "--bundle", b,
            h.cid()]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=b,
                       stdin=subprocess.DEVNULL)
    found = [d for d in _all_cgroup_dirs(delegated) if os.path.basename(d) == evil]
    for d in found:
        _remove_cgroup(d)
    assert r.returncode == 0 and "end-of-test" in r.stdout, r.stderr[-1500:]
    assert not found, f"the container made cgroups on the host: {found}\n{r.stdout}"
    fields = [f for f in (line.split() for line in r.stdout.splitlines()
                          if " /sys/fs/cgroup" in line) if len(f) > 3]
    visible = [f for i, f in enumerate(fields) if not any(
        later[1] == f[1] or f[1].startswith(later[1] + "/") for later in fields[i + 1:])]
    cgroupfs_mounts = [f for f in visible if f[2] in ("cgroup", "cgroup2")]
    writable = [m[1] for m in cgroupfs_mounts if "ro" not in m[3].split(",")]
    assert cgroupfs_mounts and not writable, f"writable cgroupfs: {writable}\n{r.stdout}"


def _delegate_cgroups(name: str, uid: int, gid: int) -> list[str]:
    """A cgroup `name` below our own in every hierarchy, owned by `uid` (as systemd
    delegates one to a user)."""
    from conformance import cgroupfs

    made = []
    own = cgroupfs.proc_cgroups()
    for hier in cgroupfs.hierarchies():
        if hier.key not in own:
            continue
        d = os.path.join(cgroupfs.host_dir(hier, own[hier.key]), name)
        try:
            os.mkdir(d)
        except OSError:
            continue
        made.append(d)
        for entry in [d, *(os.path.join(d, f) for f in ("cgroup.procs", "tasks",
                                                          "cgroup.subtree_control"))]:
            if os.path.exists(entry):
                os.chown(entry, uid, gid)
    return made


def _all_cgroup_dirs(name: str) -> list[str]:
    from conformance import cgroupfs

    found = []
    own = cgroupfs.proc_cgroups()
    for hier in cgroupfs.hierarchies():
        if hier.key in own:
            for top, dirs, _ in os.walk(cgroupfs.host_dir(hier, own[hier.key])):
                found += [os.path.join(top, x) for x in dirs]
    return found


def _remove_cgroup(d: str) -> None:
    from conformance import cgroupfs

    cgroupfs.remove_tree(d, timeout=2)


@deviation("runc", "runc 1.1.5 (before the CVE-2025-52881 fix) writes sysctls through the "
                   "container's /proc: a bind mount there redirects the write")
@case("SE-17", "security.md CVE-2025-52881", "SEC")
def test_sysctl_write_not_redirected_by_a_mount(h):
    """a createContainer hook bind-mounts /proc/sys/kernel/hostname over .../domainname
    inside the container; the runtime's write of kernel.domainname must not land on the
    hostname (both belong to the container's own UTS namespace)"""
    holder = {}

    def edit(cfg):
        proc_sys = os.path.join(holder["rootfs"], "proc", "sys", "kernel")
        cfg["hostname"] = "conf-host"
        cfg["linux"]["sysctl"] = {"kernel.domainname": "conf-domain"}
        cfg["hooks"] = {"createContainer": [{"path": "/bin/mount", "args": [
            "mount", "--bind", f"{proc_sys}/hostname", f"{proc_sys}/domainname"]}]}
    holder["rootfs"] = os.path.join(h.path(f"bundle{h.counter[0] + 1}"), "rootfs")
    b = h.bundle(["uname", "-n"], edit=edit)
    assert holder["rootfs"] == os.path.join(b, "rootfs")
    r = h.run(b)
    if r.rc == 0:
        assert r.out.strip() == "conf-host", f"the sysctl write landed on the hostname: {r}"


@case("SE-11", "config-linux.md#readonly-paths", "SEC")
def test_readonly_proc_paths(h):
    """every readonlyPath of the default config that exists is a read-only mount"""
    paths = [p for p in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                         "/proc/sysrq-trigger") if os.path.exists(p)]
    out = h.output(h.bundle(["cat", "/proc/self/mountinfo"]))
    mounts = procfs.parse_mountinfo(out)
    for p in paths:
        m = procfs.mount_at(mounts, p)
        assert m is not None and "ro" in m.options, f"{p} is writable:\n{out}"
