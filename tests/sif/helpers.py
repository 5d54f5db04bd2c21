"""Helpers for the SIF tests: where the reference files are, running `ocirt sif`, the
reference implementation driver, and finding leaked loop devices, mounts, processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "..", "shared", "fixtures", "sif")
KEYS = os.path.join(FIXTURES, "keys")
GO_SIF = "/usr/share/gocode/src/github.com/sylabs/sif"
DEBIAN_IMAGES = os.path.join(GO_SIF, "test", "images")
DEBIAN_KEY = os.path.join(GO_SIF, "test", "keys", "private.asc")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
if not os.path.exists(PYTHON):
    import sys

    PYTHON = sys.executable


def need_reference_files() -> None:
    """Skip a test that reads the reference files (images, keys, SHA256SUMS) where the
    checkout has no ../shared/fixtures/sif beside it (a user's clone)."""
    if not os.path.isdir(FIXTURES):
        pytest.skip("the reference files are not here (no ../shared/fixtures/sif)")


def fixture(name: str) -> str:
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.skip(f"reference file {name} missing (../shared/fixtures/sif)")
    return path


# What a-minimal-busybox.sif's runscript prints (../shared/fixtures/sif/README.md).
LIKE_RUNSCRIPT = 'echo "runscript: hello from SIF"; echo "args: $@"'


def make_like(name: str, directory: str) -> str:
    """An image with the objects of reference file `name` (see the table in
    ../shared/fixtures/sif/README.md), written in `directory` by ocirt's own writer, so
    that what a test checks with that file is checked in a clone without ../shared too
    (tests/sif/test_reference.py shows the writer gives the reference's bytes for the
    same objects). Known: a-minimal-busybox.sif and b-multi-object.sif."""
    from conformance.bundle import make_rootfs

    out = os.path.join(directory, name)
    deffile = _write(directory, "deffile", "Bootstrap: scratch\n")
    if name == "a-minimal-busybox.sif":  # 1 definition file, 2 primary system partition
        rootfs = make_rootfs(os.path.join(directory, "busybox-rootfs"))
        run_sif("create", "--rootfs", rootfs, "--deffile", deffile, "--runscript",
                LIKE_RUNSCRIPT, out, check=True)
        return out
    if name != "b-multi-object.sif":
        raise ValueError(f"no recipe for {name}")
    run_sif("new", out, check=True)
    objects = [
        ("deffile", deffile, "deffile", []),
        ("labels", _write(directory, "labels.json", '{"org.example.kind": "test"}'),
         "labels.json", []),
        ("envvar", _write(directory, "90-environment.sh", "export A=1\n"),
         "90-environment.sh", []),
        ("json", _write(directory, "inspect-metadata.json", '{"data": {}}'),
         "inspect-metadata.json", []),
        ("partition", _squashfs(directory, "primary"), "primary.squashfs",
         ["--partfs", "1", "--parttype", "2"]),
        ("partition", _squashfs(directory, "data"), "data.squashfs",
         ["--partfs", "1", "--parttype", "3"]),
    ]
    for kind, path, obj_name, extra in objects:
        run_sif("add", "--datatype", kind, "--name", obj_name, *extra, out, path, check=True)
    return out


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _squashfs(directory: str, name: str) -> str:
    """A small squashfs of one file (mksquashfs, squashfs-tools)."""
    source = os.path.join(directory, f"{name}-tree")
    os.makedirs(source)
    _write(source, "file", f"{name}\n")
    out = os.path.join(directory, f"{name}.squashfs")
    subprocess.run(["mksquashfs", source, out, "-noappend", "-quiet", "-all-root"],
                   check=True, capture_output=True, timeout=60)
    return out


def run_sif(*args: str, check: bool = False, timeout: float = 120,
            user: str | None = None, **kw: Any) -> subprocess.CompletedProcess:
    """`ocirt sif ARGS` through the repository's interpreter; `user` runs it as that
    (unprivileged) user."""
    argv = [PYTHON, "-m", "ocirt", "sif", *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    kw.setdefault("cwd", REPO)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                         **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"ocirt sif {' '.join(args)} failed: {res.stderr}")
    return res


def go_reference_missing() -> str | None:
    if shutil.which("go") is None:
        return "go is not installed (golang-go)"
    if not os.path.isdir(os.path.join(GO_SIF, "pkg", "integrity")):
        return "the reference library is not installed (golang-github-sylabs-sif-dev)"
    return None


def reference(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          check=False)


# --- leak checks ---------------------------------------------------------------------

def loop_backings() -> dict[str, str]:
    """Attached loop devices -> their backing files."""
    out = {}
    for name in os.listdir("/sys/block"):
        path = f"/sys/block/{name}/loop/backing_file"
        if name.startswith("loop") and os.path.exists(path):
            try:
                with open(path) as f:
                    out[name] = f.read().strip()
            except OSError:
                continue
    return out


def pinned_elsewhere(path: str) -> bool:
    """Whether another process's mount namespace still holds a mount of `path`: a
    namespace created (by anyone) while our mount existed keeps a copy of it, and the
    kernel frees the loop device only when that namespace goes."""
    needle = os.path.realpath(path).encode()
    me = os.readlink("/proc/self/ns/mnt")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == me:
                continue
            with open(f"/proc/{pid}/mountinfo", "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


def attached_loops(prefix: str) -> dict[str, str]:
    """Loop devices backed by files under `prefix` that nothing but us could hold."""
    return {dev: f for dev, f in loop_backings().items()
            if f.startswith(prefix) and not pinned_elsewhere(os.path.dirname(f))}


def wait_detached(backing: str, timeout: float = 3) -> bool:
    """Autoclear detaches a loop device from a kernel worker: wait for it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if not attached_loops(backing):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def mounts_under(prefix: str) -> list[str]:
    from ocirt.linux.mountinfo import unescape

    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = unescape(line.split()[4])
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                found.append(point)
    return found


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z" and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd}")
    return found


def stray_gpg_agents() -> list[str]:
    """gpg-agents whose (ocirt) home directory is gone: ones we forgot to stop."""
    found = []
    for entry in processes_mentioning("ocirt-gpg-"):
        words = entry.split()
        if "--homedir" in words:
            home = words[words.index("--homedir") + 1]
            if not os.path.exists(home):
                found.append(entry)
    return found




def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
