"""The in-root resolver, the console mount and tmpfs mount destinations, on the
recording fake of the syscall seam (tests/fakesys.py): no root needed.

Hostile layouts (absolute, relative and dangling symlinks) and races: a directory is
swapped for a symlink to the host right before every single syscall of an operation, in
turn; the operation must then either fail or act inside the root, and never create or
mount anything outside it.
"""

from __future__ import annotations

import os
import stat

import pytest

from ocirt.errors import OcirtError
from ocirt.fs import console, resolve, rootfs
from ocirt.linux import consts as c
from ocirt.linux import syscalls
from ocirt.spec.plan import Mount, Plan
from tests.fakesys import FakeSyscalls

ROOTFS = "/bundle/rootfs"


@pytest.fixture(params=["openat2", "walk"])
def fake(request):
    """A fake tree with a host part (/etc, /host-secret) and a rootfs; in "walk" mode
    openat2 is missing (ENOSYS) and the resolver walks component by component."""
    fs = FakeSyscalls(openat2=request.param == "openat2")
    fs.mkdirs("/etc")
    fs.add("/host-secret", "file")
    fs.mkdirs(ROOTFS + "/etc")
    fs.mkdirs(ROOTFS + "/dev")
    fs.mkdirs(ROOTFS + "/proc")
    previous = syscalls.use(fs)
    resolve._openat2_works = None
    yield fs
    syscalls.use(previous)
    resolve._openat2_works = None


def _root(fs: FakeSyscalls) -> int:
    return fs.open_host(ROOTFS)


def _host_tree(fs: FakeSyscalls) -> set[str]:
    """Every path outside the rootfs."""
    out, stack = set(), [("", fs.root)]
    while stack:
        prefix, node = stack.pop()
        node = node.top()
        for name, child in node.children.items():
            path = f"{prefix}/{name}"
            if path == "/bundle/rootfs":
                continue
            out.add(path)
            stack.append((path, child))
    return out


@pytest.mark.parametrize("link", ["/", "../../../..", "/..", "/etc/../../.."])
def test_symlinks_never_leave_the_root(fake, link):
    fake.add(ROOTFS + "/escape", "link", target=link)
    fd = resolve.open_in_root(_root(fake), "/escape/etc")
    assert fake.path_of(fake.fd_node(fd)) == ROOTFS + "/etc"


def test_dangling_symlink_is_created_inside_the_root(fake):
    fake.add(ROOTFS + "/etc/new", "link", target="/nonexistent/dir")
    before = _host_tree(fake)
    fd = resolve.mkdir_all(_root(fake), "/etc/new/sub")
    assert fake.path_of(fake.fd_node(fd)) == ROOTFS + "/nonexistent/dir/sub"
    assert _host_tree(fake) == before


def test_create_file_through_a_dangling_symlink(fake):
    fake.add(ROOTFS + "/etc/conf", "link", target="/host-secret")
    fd = resolve.create_file(_root(fake), "/etc/conf")
    assert fake.path_of(fake.fd_node(fd)) == ROOTFS + "/host-secret"
    assert fake.node("/host-secret").kind == "file"  # the host's one is untouched
    assert fake.node(ROOTFS + "/host-secret").kind == "file"


def _race(make_fs, operation, attack) -> list[str]:
    """Run `operation` once to count its calls, then once per call index with `attack`
    injected right before that call; returns what went wrong."""
    fs = make_fs()
    operation(fs)
    total = len(fs.calls)
    problems = []
    for k in range(total + 1):
        fs = make_fs()
        before = _host_tree(fs)
        fs.before(k, lambda fs=fs: attack(fs))
        try:
            node = operation(fs)
        except (OSError, OcirtError):
            node = None
        if node is not None and not fs.inside(node, fs.node(ROOTFS)):
            problems.append(f"call {k}: resolved to {fs.path_of(node)}")
        if _host_tree(fs) - before:
            problems.append(f"call {k}: made {_host_tree(fs) - before} on the host")
        for m in fs.mounts:
            if not fs.inside(m["target"], fs.node(ROOTFS)):
                problems.append(f"call {k}: mounted on {fs.path_of(m['target'])}")
    assert total >= 1
    return problems


def _factory(fake, build):
    def make():
        fs = FakeSyscalls(openat2=fake.has_openat2)
        fs.mkdirs("/etc")
        fs.mkdirs(ROOTFS + "/dev")
        fs.mkdirs(ROOTFS + "/proc")
        build(fs)
        syscalls.use(fs)
        resolve._openat2_works = None
        return fs
    return make


def _swap_for_host_link(path: str):
    """The racer: `path` becomes a symlink to the host's /etc (renameat2 exchange)."""
    def attack(fs):
        fs.add(ROOTFS + "/.evil", "link", target="/etc")
        fs.swap(ROOTFS + path, ROOTFS + "/.evil")
    return attack


def test_open_in_root_with_a_directory_swapped_before_any_call(fake):
    def build(fs):
        fs.mkdirs(ROOTFS + "/a/b/c")

    def operation(fs):
        return fs.fd_node(resolve.open_in_root(_root(fs), "/a/b/c"))
    assert _race(_factory(fake, build), operation, _swap_for_host_link("/a/b")) == []


def test_mkdir_all_with_a_directory_swapped_before_any_call(fake):
    def build(fs):
        fs.mkdirs(ROOTFS + "/vol")

    def operation(fs):
        return fs.fd_node(resolve.mkdir_all(_root(fs), "/vol/x/y/z"))

    def attack(fs):  # whatever of the new tree exists is swapped for a link to the host
        for path in ("/vol/x/y", "/vol/x", "/vol"):
            try:
                fs.node(ROOTFS + path)
            except OSError:
                continue
            _swap_for_host_link(path)(fs)
            return
    assert _race(_factory(fake, build), operation, attack) == []


def test_console_symlink_is_refused_not_mounted_through(fake):
    fake.add(ROOTFS + "/etc/shadow", "file")
    fake.add(ROOTFS + "/dev/console", "link", target="/etc/shadow")
    slave = fake.open_host(ROOTFS + "/dev")  # stands for the pty's slave fd
    with pytest.raises(OcirtError, match="is a symlink"):
        console.mount_console(_root(fake), slave)
    assert fake.mounts == []


def test_console_swapped_for_a_symlink_before_any_call(fake):
    def build(fs):
        fs.add(ROOTFS + "/etc/shadow", "file")

    def operation(fs):
        console.mount_console(_root(fs), fs.open_host(ROOTFS + "/etc"))
        [m] = fs.mounts
        return m["target"]

    def attack(fs):
        try:
            fs.node(ROOTFS + "/dev/console")
        except OSError:
            fs.add(ROOTFS + "/dev/console", "file")
        fs.add(ROOTFS + "/dev/.evil", "link", target="/etc/shadow")
        fs.swap(ROOTFS + "/dev/console", ROOTFS + "/dev/.evil")

    make = _factory(fake, build)
    assert _race(make, operation, attack) == []
    for k in range(40):  # and it never lands on the file the link points to
        fs = make()
        fs.before(k, lambda fs=fs: attack(fs))
        try:
            node = operation(fs)
        except (OSError, OcirtError):
            continue
        assert fs.path_of(node) != ROOTFS + "/etc/shadow", f"call {k}"


def _plan() -> Plan:
    plan = Plan()
    plan.rootfs = ROOTFS
    return plan


def _tmpfs(dest: str) -> Mount:
    return Mount("tmpfs", dest, "tmpfs", c.MS_NOSUID, "", [], 0, 0, False, [])


def test_tmpfs_destination_through_an_absolute_symlink_stays_inside(fake):
    fake.add(ROOTFS + "/run", "link", target="/etc")
    rootfs._mount_tmpfs(_root(fake), _plan(), _tmpfs("/run/x"))
    [m] = fake.mounts
    assert fake.path_of(m["target"]) == ROOTFS + "/etc/x"
    assert m["target"] is not fake.node("/etc").children.get("x")


def test_tmpfs_on_proc_through_a_symlink_is_refused(fake):
    fake.add(ROOTFS + "/innocent", "link", target="/proc")
    with pytest.raises(rootfs.RootfsError, match="not of type proc"):
        rootfs._mount_tmpfs(_root(fake), _plan(), _tmpfs("/innocent"))
    assert fake.mounts == []


def test_tmpfs_destination_swapped_before_any_call(fake):
    def build(fs):
        fs.mkdirs(ROOTFS + "/vol/data")

    def operation(fs):
        rootfs._mount_tmpfs(_root(fs), _plan(), _tmpfs("/vol/data"))
        [m] = fs.mounts
        return m["target"]
    assert _race(_factory(fake, build), operation, _swap_for_host_link("/vol")) == []


def test_the_fake_is_a_real_adversary(fake):
    """The harness itself: code that checks a destination in the root and then uses it
    by its host path (the CVE-2021-30465 mistake) is caught by the same race."""
    def build(fs):
        fs.mkdirs(ROOTFS + "/vol")

    def naive(fs):
        sc = syscalls.current()
        checked = resolve.open_in_root(_root(fs), "/vol", os.O_PATH | os.O_DIRECTORY)
        if not stat.S_ISDIR(sc.fstat(checked).st_mode):
            raise OSError("not a directory")
        by_path = sc.open(ROOTFS + "/vol", os.O_PATH | os.O_DIRECTORY)
        sc.mkdir("x", 0o755, by_path)
        return fs.fd_node(by_path)
    problems = _race(_factory(fake, build), naive, _swap_for_host_link("/vol"))
    assert any("on the host" in p for p in problems), problems
