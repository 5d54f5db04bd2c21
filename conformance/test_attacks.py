"""security: real attacks run as tests (../shared/docs/security.md, section 2).

Each case runs the attack a hostile image or container would mount and checks the
container and the host afterwards: the runtime's binaries (and, for an interpreted
runtime, its interpreter) are byte-identical, core_pattern is unchanged, and nothing
escaped. The racing cases repeat create many times against a racer thread
(CONFORMANCE_RACE_ROUNDS, default 150).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import subprocess
import threading
import time

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

ROUNDS = int(os.environ.get("CONFORMANCE_RACE_ROUNDS", "150"))
STRAY_FDS = (10, 251)
RENAME_EXCHANGE = 2


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _contains(path: str, text: str) -> bool:
    try:
        with open(path) as f:
            return text in f.read()
    except OSError:
        return False


def _runtime_files(binary: str) -> list[str]:
    """The runtime's executable, and its interpreter when it is a script."""
    files = [os.path.realpath(binary)]
    with open(files[0], "rb") as f:
        first = f.readline()
    if first.startswith(b"#!"):
        interpreter = first[2:].split()[0].decode()
        files.append(os.path.realpath(interpreter))
    return files


@pytest.fixture
def host_intact(h):
    """Hashes of the runtime (and interpreter) and core_pattern, checked after the case."""
    files = _runtime_files(h.info.binary)
    before = {p: _sha256(p) for p in files}
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read()
    yield
    assert {p: _sha256(p) for p in files} == before, "the runtime's files changed"
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == pattern, "core_pattern changed"


ATTACKER = r"""
# Every process of the container that a runtime might have left in view: try to open
# its executable for writing, directly and through an O_PATH-style reopen.
end=$(( $(date +%s) + SECONDS_ ))
while [ $(date +%s) -lt $end ]; do
  for p in /proc/[0-9]*; do
    [ "$p" = "/proc/$$" ] && continue
    if ( : >> $p/exe ) 2>/dev/null; then echo "WROTE $(readlink $p/exe)" >> /tmp/attack.log; fi
  done
done
echo done >> /tmp/attack.log
"""


@needs("exec")
@case("SE-12", "security.md CVE-2019-5736", "SEC")
def test_proc_self_exe_shebang_under_exec(h, host_intact):
    """an image whose /bin/evil is `#!/proc/self/exe`, exec'd while the container
    tries to write every visible /proc/<pid>/exe: the host runtime stays intact"""
    def rootfs(path):
        with open(os.path.join(path, "bin", "evil"), "w") as f:
            f.write("#!/proc/self/exe\n")
        os.chmod(os.path.join(path, "bin", "evil"), 0o755)
    b = h.bundle(["sh", "-c", ATTACKER.replace("SECONDS_", "4")], rootfs=rootfs)
    with h.running(b) as c:
        for _ in range(10):
            h.rt("exec", c.cid, "/bin/evil", timeout=20)
            h.rt("exec", c.cid, "true", timeout=20)
        log = os.path.join(b, "rootfs", "tmp", "attack.log")
        assert wait_for(lambda: _contains(log, "done"), 20), "the attacker never finished"
        with open(log) as f:
            wrote = [line for line in f if line.startswith("WROTE")]
    assert not wrote, f"the container wrote to a runtime executable: {wrote}"


@deviation("runc", "runc 1.1's waiting `runc init` is dumpable while it blocks on the exec "
                   "fifo: its environ (the _LIBCONTAINER_* variables) is readable; its fds "
                   "and memory are not")
@case("SE-13", "security.md CVE-2016-9962", "SEC")
def test_created_init_is_not_inspectable(h):
    """from inside, the waiting init's memory, environment and fds are out of reach"""
    c = h.create(h.bundle(["sleep", "1000"]))
    r = h.rt("exec", c.cid, "sh", "-c", "cat /proc/1/environ >/dev/null 2>&1 && echo ENV; "
             "for f in /proc/1/fd/*; do readlink $f >/dev/null 2>&1 && echo FD$f; done; "
             "dd if=/proc/1/mem bs=1 count=1 >/dev/null 2>&1 && echo MEM; echo checked")
    if r.rc != 0 and "checked" not in r.out:
        pytest.skip(f"exec into a created container is not supported: {r.err[-200:]}")
    assert r.out.split() == ["checked"], f"the created init is inspectable: {r.out}"


@pytest.mark.parametrize("where", ["exec --cwd", "args"])
@needs("exec")
@case("SE-14", "security.md CVE-2024-21626", "SEC")
def test_leaked_fd_in_exec(h, where):
    """`exec --cwd /proc/self/fd/N` and args through /proc/self/fd/N never reach the host
    (with host directories open on the runtime's stray fds)"""
    escapes = []
    with h.running(h.bundle(["sleep", "1000"])) as c:
        for n in (*range(3, 12), *STRAY_FDS):
            if where == "exec --cwd":
                args = ("exec", "--cwd", f"/proc/self/fd/{n}", c.cid, "sh", "-c",
                        "pwd; ls /")
            else:
                args = ("exec", c.cid, f"/proc/self/fd/{n}/../../../bin/sh", "-c", "ls /")
            opens = " ".join(f"{fd}</" for fd in STRAY_FDS)
            argv = ["/bin/bash", "-c", f'exec {opens} && exec "$@"', "bash", *h.rt.cmd(*args)]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            if r.returncode == 0 and ("(unreachable)" in r.stdout or "vmlinuz" in r.stdout
                                      or "work" in r.stdout.split()):
                escapes.append((n, r.stdout[:200]))
    assert not escapes, f"escaped to the host: {escapes}"


def _racer(a: str, b: str, stop: threading.Event) -> threading.Thread:
    """A thread swapping two paths with renameat2(RENAME_EXCHANGE) as fast as it can."""
    libc = ctypes.CDLL(None, use_errno=True)

    def loop() -> None:
        while not stop.is_set():
            libc.renameat2(-100, a.encode(), -100, b.encode(), RENAME_EXCHANGE)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def _host_root_binds(pid: int) -> list[str]:
    """Mounts in the container that show the host's root directory."""
    root_dev = os.stat("/").st_dev
    dev = f"{os.major(root_dev)}:{os.minor(root_dev)}"
    found = []
    for m in procfs.mountinfo(pid):
        if m.major_minor == dev and m.root == "/":
            found.append(m.mountpoint)
    return found


@pytest.mark.slow
@case("SE-15", "security.md CVE-2021-30465", "SEC")
def test_rename_exchange_race_on_a_mount_destination(h):
    """a racer swaps a mount destination's directory with a symlink to / during many
    creates: no mount ever lands on or shows the host"""
    b = h.bundle(["sleep", "1000"], edit=lambda cfg: cfg["mounts"].append(
        {"destination": "/vol/dir", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1k"]}))
    vol = os.path.join(b, "rootfs", "vol")
    os.makedirs(os.path.join(vol, "dir"))
    os.symlink("/", os.path.join(vol, "link"))
    stop = threading.Event()
    racer = _racer(os.path.join(vol, "dir"), os.path.join(vol, "link"), stop)
    escapes = []
    try:
        for _ in range(ROUNDS):
            c = h.create(b, check=False)
            if c.result.ok and c.pid:
                escapes += _host_root_binds(c.pid)
                c.delete(force=True, check=False)
    finally:
        stop.set()
        racer.join()
    assert not escapes, f"host root visible in the container: {escapes}"


@pytest.mark.slow
@deviation("runc", "Debian's runc 1.1.5 predates the CVE-2025-31133 fix: with /dev/null "
                   "swapped mid-create, masking silently fails and the real /proc files show")
@case("SE-16", "security.md CVE-2025-31133", "SEC")
def test_dev_null_swapped_during_masking(h, host_intact):
    """a racer swaps the /dev/null used for masking with a symlink to a file: masked
    paths never show that file, and the file is never written"""
    devdir = h.mkdir("dev-volume")
    os.mknod(os.path.join(devdir, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    secret = os.path.join(devdir, "secret")
    with open(secret, "w") as f:
        f.write("SECRET\n")
    os.symlink(secret, os.path.join(devdir, "evil"))
    masked = [p for p in ("/proc/timer_list", "/proc/keys") if os.path.isfile(p)]

    def edit(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if not m["destination"].startswith("/dev")]
        cfg["mounts"].append({"destination": "/dev", "source": devdir, "options": ["rbind"]})
        cfg["linux"]["maskedPaths"] = masked
    script = "; ".join(f"echo {p}=$(cat {p} | wc -c)" for p in masked) + "; true"
    b = h.bundle(["sh", "-c", script], edit=edit)
    stop = threading.Event()
    racer = _racer(os.path.join(devdir, "null"), os.path.join(devdir, "evil"), stop)
    shown = []
    try:
        for _ in range(max(ROUNDS // 3, 20)):
            r = h.run(b)
            if r.rc == 0:
                shown += [line for line in r.out.splitlines() if not line.endswith("=0")]
    finally:
        stop.set()
        racer.join()
        time.sleep(0.05)
    with open(secret) as f:
        assert f.read() == "SECRET\n", "the file behind the swapped /dev/null was written"
    assert not shown, f"masked paths showed the swapped file: {shown}"
