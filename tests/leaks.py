"""Checks that a failed or finished container left nothing on the host."""

from __future__ import annotations

import os


def processes_rooted_in(path: str) -> list[int]:
    """PIDs whose root directory or cwd lies inside `path` (a container's rootfs)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for link in ("root", "cwd"):
            try:
                target = os.readlink(f"/proc/{name}/{link}")
            except OSError:
                continue
            if target == path or target.startswith(path.rstrip("/") + "/"):
                found.append(int(name))
                break
    return found


def processes_naming(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (a helper outliving its command)."""
    needle = text.encode()
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def processes_with_argument(name: str) -> list[int]:
    """PIDs with `name` as a whole argument or as a path component of one (a container
    ID on a leftover's command line), not as a mere substring: `img-6` must not match
    another program's `initrd.img-6.1.0-50-amd64`."""
    needle = name.encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(arg == needle or needle in arg.split(b"/") for arg in args):
            found.append(int(pid))
    return found


def mounts_under(path: str, pid: int | str = "self") -> list[str]:
    """Mount points at or below `path` in the mount namespace of `pid`."""
    prefix = path.rstrip("/")
    with open(f"/proc/{pid}/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def assert_nothing_left(state_root: str, cid: str, bundle: str) -> None:
    assert not os.path.exists(os.path.join(state_root, cid)), "state directory left"
    assert processes_rooted_in(os.path.join(bundle, "rootfs")) == [], "processes left"
    assert mounts_under(bundle) == [], "mounts left"
