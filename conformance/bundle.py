"""OCI bundles with a busybox-static root filesystem, for tests of any runtime."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from typing import Any

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path):
            return path
    found = shutil.which("busybox")
    if not found:
        raise RuntimeError("busybox not found: apt install busybox-static")
    return found


_APPLETS: list[str] = []


def applets() -> list[str]:
    if not _APPLETS:
        out = subprocess.run([busybox(), "--list"], capture_output=True, text=True, check=True)
        _APPLETS.extend(a for a in out.stdout.split() if a != "busybox")
    return _APPLETS


def make_rootfs(rootfs: str) -> str:
    """A minimal root filesystem: busybox and its applets in /bin, passwd and group."""
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home"):
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(busybox(), os.path.join(rootfs, "bin", "busybox"))
    for applet in applets():
        link = os.path.join(rootfs, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                "user:x:1000:1000:user:/home/user:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\ndaemon:x:1:\ntty:x:5:\nuser:x:1000:\nnobody:x:65534:\n")
    return rootfs


DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_TEMPLATE: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(DEFAULT_CAPS) for k in
                         ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": "conformance",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ],
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                       {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}


def default_config(args: list[str] | None = None) -> dict[str, Any]:
    """runc's `spec` template with terminal off, a writable root and `args`."""
    config = copy.deepcopy(_TEMPLATE)
    if args:
        config["process"]["args"] = list(args)
    return config


def make_bundle(directory: str, args: list[str] | None = None,
                config: dict[str, Any] | None = None) -> str:
    """A bundle in `directory`: rootfs/ plus config.json (`config` or the default)."""
    os.makedirs(directory, exist_ok=True)
    make_rootfs(os.path.join(directory, "rootfs"))
    write_config(directory, config if config is not None else default_config(args))
    return directory


def clone_rootfs(template: str, rootfs: str) -> str:
    """A copy of `template` that shares its regular files through hard links.

    Much faster than `make_rootfs` (no 2 MB busybox copy); directories are fresh, so a
    runtime creating mount points or device nodes in one bundle never touches another.
    Containers must not rewrite the shared files in place (none of the suite's do).
    """
    for top, dirs, files in os.walk(template):
        rel = os.path.relpath(top, template)
        dest_top = os.path.normpath(os.path.join(rootfs, rel))
        os.makedirs(dest_top, exist_ok=True)
        shutil.copystat(top, dest_top)
        for name in dirs + files:
            src, dest = os.path.join(top, name), os.path.join(dest_top, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dest)
            elif name in files:
                os.link(src, dest)
    return rootfs


def write_config(directory: str, config: dict[str, Any]) -> None:
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
