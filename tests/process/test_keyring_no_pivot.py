"""The session keyring (`--no-new-keyring`) and `--no-pivot`, in real containers, side by
side with runc where it is installed.

Session keyring: without --no-new-keyring the init joins a new session keyring named
`_ses.<id>` and makes it searchable by the container's user (runc's
getSessionRingParams); `exec` joins that same keyring. With --no-new-keyring the
container keeps the caller's session keyring. Seen from inside with keyctl(2) (the
host's Python, bind-mounted read-only, runs the two calls) and from the host in
/proc/keys.

--no-pivot: the root is entered with MS_MOVE + chroot instead of pivot_root (proved by
running the runtime under a seccomp filter that makes pivot_root fail: only --no-pivot
still works), and every full procfs/sysfs mount of the host is gone from the
container's mount namespace first, so a user namespace in the container still cannot
mount a fresh procfs (runc's no_pivot.bats).
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import uuid

import pytest

from conformance.runner import Runtime, wait_for
from tests.conftest import IN_CHROOT
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

HAVE_RUNC = shutil.which("runc") is not None and not IN_CHROOT
KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
PYTHON = os.path.realpath("/usr/bin/python3")

# keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING) then KEYCTL_DESCRIBE:
# "<serial> keyring;<uid>;<gid>;<perm>;<description>".
SESSION_KEYRING = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
serial = libc.syscall(L({KEYCTL}), L(0), L(-3), L(0))
buf = ctypes.create_string_buffer(512)
n = libc.syscall(L({KEYCTL}), L(6), L(serial), buf, L(512))
print(serial, buf.value.decode() if n > 0 else "describe failed", flush=True)
"""

needs_keyctl = pytest.mark.skipif(KEYCTL is None or not os.path.exists("/proc/keys"),
                                  reason="no keyctl syscall number for this machine or "
                                         "no /proc/keys")


def runtimes(ocirt, tmp_path) -> list[Runtime]:
    found = [ocirt]
    if HAVE_RUNC:
        found.append(Runtime(shutil.which("runc"), str(tmp_path / "runc-state")))
    return found


@pytest.fixture
def runc_cleanup(tmp_path):
    yield
    if HAVE_RUNC:
        Runtime(shutil.which("runc"), str(tmp_path / "runc-state")).cleanup()


def python_bundle(bundle, args: list[str], edit=None) -> str:
    """A busybox bundle that can also run the host's /usr/bin/python3: /usr bind-mounted
    read-only, and /lib, /lib64 as the host has them (merged /usr)."""
    def edit_all(cfg):
        cfg["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                              "options": ["rbind", "ro", "nosuid", "nodev"]})
        if edit is not None:
            edit(cfg)

    b = bundle(args, edit=edit_all)
    os.mkdir(os.path.join(b, "rootfs", "usr"))  # a root in a user namespace could not
    for name in ("lib", "lib64"):
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), os.path.join(b, "rootfs", name))
    return b


def keyring_line(serial: int) -> list[str]:
    """The /proc/keys line of key `serial` as the host sees it, split into its fields:
    serial, flags, usage, expiry, perm, uid, gid, type, description."""
    with open("/proc/keys") as f:
        for line in f:
            fields = line.split(None, 8)
            if int(fields[0], 16) == serial:
                return fields
    raise AssertionError(f"key {serial:x} is not in the host's /proc/keys")


def keyring_serials() -> set[int]:
    with open("/proc/keys") as f:
        return {int(line.split()[0], 16) for line in f}


def own_session_keyring() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(ctypes.c_long(KEYCTL), ctypes.c_long(0), ctypes.c_long(-3),
                        ctypes.c_long(0))


def parse(out: str) -> tuple[int, str]:
    serial, desc = out.strip().splitlines()[-1].split(" ", 1)
    return int(serial), desc


# Run argv[2:] in a new session keyring named argv[1] (what `keyctl session NAME` does).
IN_SESSION = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.syscall(ctypes.c_long({KEYCTL}), ctypes.c_long(1), sys.argv[1].encode()) < 0:
    sys.exit("join session keyring: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def in_session(name: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", IN_SESSION, name, *argv],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)


def userns(cfg) -> None:
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


@needs_keyctl
@pytest.mark.parametrize("user_ns", [False, True], ids=["host-userns", "userns"])
def test_the_init_and_exec_join_a_new_session_keyring(ocirt, bundle, open_bundle, tmp_path,
                                                      runc_cleanup, user_ns):
    for rt in runtimes(ocirt, tmp_path):
        cid = f"{rt.name}-keys"
        b = python_bundle(open_bundle if user_ns else bundle,
                          ["sh", "-c", f"{PYTHON} -c '{SESSION_KEYRING}'; exec sleep 1000"],
                          edit=userns if user_ns else None)
        out = tmp_path / f"{cid}.out"
        with open(out, "wb") as f:
            r = rt("run", "-d", "--bundle", b, cid, stdout=f)
        assert r.rc == 0, (rt.name, r)
        assert wait_for(lambda path=out: path.read_text().strip() != "", 10), rt.name
        serial, desc = parse(out.read_text())
        # uid 0, gid 0, possessor: all; user: view, read, link; plus search for the
        # container's user: "user" (0x80000) or, in a user namespace, "other" (0x8).
        perm = "3f130008" if user_ns else "3f1b0000"
        assert desc == f"keyring;0;0;{perm};_ses.{cid}", (rt.name, desc)
        assert serial != own_session_keyring()
        if user_ns:  # owned by host uid 100000: to the host's root, "other", no view
            assert serial not in keyring_serials(), rt.name
        else:
            fields = keyring_line(serial)  # the host sees the same key
            assert (fields[4], fields[5], fields[7]) == (perm, "0", "keyring"), fields
            assert fields[8].startswith(f"_ses.{cid}:"), fields
        r = rt("exec", cid, PYTHON, "-c", SESSION_KEYRING)
        assert r.rc == 0, (rt.name, r)
        if not user_ns:
            assert parse(r.out) == (serial, desc), rt.name  # the init's own keyring
        else:
            # The keyring's owner is the container's root, whose "user" bits lack search:
            # the kernel finds no `_ses.<id>` it may join and makes a new one, with the
            # kernel's default permissions (runc does the same; it sets them only in the
            # init).
            exec_serial, exec_desc = parse(r.out)
            assert exec_serial != serial, rt.name
            assert exec_desc == f"keyring;0;0;3f130000;_ses.{cid}", (rt.name, exec_desc)
        assert rt("delete", "--force", cid).rc == 0


@needs_keyctl
def test_no_new_keyring_keeps_the_callers_session_keyring(ocirt, bundle, tmp_path,
                                                          runc_cleanup):
    for rt in runtimes(ocirt, tmp_path):
        name = f"attrs-test-{uuid.uuid4().hex[:8]}"
        cid = f"{rt.name}-nokeys"
        b = python_bundle(bundle, ["sh", "-c", f"{PYTHON} -c '{SESSION_KEYRING}'"])
        r = in_session(name, rt.cmd("run", "--no-new-keyring", "--bundle", b, cid))
        assert r.returncode == 0, (rt.name, r)
        serial, desc = parse(r.stdout)
        assert desc.endswith(f";{name}") and desc.startswith("keyring;0;0;"), (rt.name, desc)
        assert keyring_line(serial)[8].startswith(f"{name}:")
        # exec keeps its own caller's keyring too: --no-new-keyring is the container's.
        b = python_bundle(bundle, ["sleep", "1000"])
        assert rt("run", "-d", "--no-new-keyring", "--bundle", b, cid).rc == 0
        r = in_session(name + "-exec", rt.cmd("exec", cid, PYTHON, "-c", SESSION_KEYRING))
        assert r.returncode == 0, (rt.name, r)
        assert parse(r.stdout)[1].endswith(f";{name}-exec"), (rt.name, r.stdout)
        assert rt("delete", "--force", cid).rc == 0


# --- --no-pivot ------------------------------------------------------------------------

# A seccomp filter for the runtime and everything it starts: pivot_root(2) fails with
# EPERM, every other call is allowed. (arch, pivot_root's number)
_ARCH = {"x86_64": (0xC000003E, 155), "aarch64": (0xC00000B7, 41)}.get(platform.machine())
NO_PIVOT_ROOT = f"""
import ctypes, os, struct, sys
arch, nr = {_ARCH}
def insn(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([insn(0x20, 4), insn(0x15, arch, 0, 3), insn(0x20, 0),
                 insn(0x15, nr, 0, 1), insn(0x06, 0x00050000 | 1), insn(0x06, 0x7FFF0000)])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
"""


def without_pivot_root(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_PIVOT_ROOT, *argv], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.skipif(_ARCH is None, reason="no seccomp numbers for this machine")
def test_no_pivot_uses_move_and_chroot_not_pivot_root(ocirt, bundle, tmp_path, state_root,
                                                      runc_cleanup):
    for rt in runtimes(ocirt, tmp_path):
        b = bundle(["sh", "-c", "cat /marker; cut -d ' ' -f 5 /proc/self/mountinfo"])
        with open(os.path.join(b, "rootfs", "marker"), "w") as f:
            f.write("inside the rootfs\n")
        cid = f"{rt.name}-pivot"
        r = without_pivot_root(rt.cmd("run", "--bundle", b, cid))
        assert r.returncode != 0, (rt.name, r)  # pivot_root is needed without the flag
        assert "pivot_root" in r.stderr and "operation not permitted" in r.stderr.lower(), \
            (rt.name, r.stderr)
        rt("delete", "--force", cid)
        r = without_pivot_root(rt.cmd("run", "--no-pivot", "--bundle", b, cid))
        assert r.returncode == 0, (rt.name, r)
        lines = r.stdout.splitlines()
        assert lines[0] == "inside the rootfs", (rt.name, r.stdout)
        points = lines[1:]
        # Only the container's own mounts are visible from its root: none of the host's.
        assert points[0] == "/" and "/proc" in points and "/dev" in points, points
        expected = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}
        assert set(points) - expected <= {p for p in points
                                          if p.startswith(("/proc/", "/sys/", "/dev/"))}, \
            (rt.name, points)
        if rt is ocirt:
            assert_nothing_left(state_root, cid, b)


def test_no_pivot_hides_the_hosts_procfs(ocirt, bundle, tmp_path, state_root, runc_cleanup):
    # runc's no_pivot.bats, without its write to the host's /proc/sysrq-trigger: a user
    # namespace inside the container tries to mount a fresh procfs. The kernel allows
    # that only if a full procfs is mounted somewhere in the mount namespace; the
    # container's own /proc has masked paths over it, and the host's (still in the
    # namespace under the chroot) must have been removed.
    def edit(cfg):
        for kind in ("bounding", "permitted", "effective"):
            cfg["process"]["capabilities"][kind].append("CAP_SETFCAP")  # map uid 0
    for rt in runtimes(ocirt, tmp_path):
        b = bundle(["unshare", "-mrpf", "sh", "-c", "mount -t proc none /proc && echo mounted"],
                   edit=edit)
        cid = f"{rt.name}-proc"
        r = rt("run", "--no-pivot", "--bundle", b, cid)
        assert r.rc == 1, (rt.name, r)
        assert "mounted" not in r.out, (rt.name, r)
        assert "permission denied" in (r.out + r.err).lower(), (rt.name, r)
        if rt is ocirt:
            assert_nothing_left(state_root, cid, b)


def test_no_pivot_with_private_root_propagation_is_refused(ocirt, bundle, state_root):
    b = bundle(["true"], edit=lambda cfg: cfg["linux"].update(rootfsPropagation="private"))
    r = ocirt("run", "--no-pivot", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert "linux.rootfsPropagation: [r]private is not safe without pivot_root" in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert_nothing_left(state_root, "c1", b)
