"""The benchmark's image: busybox, the host's Python 3 and its numpy and scipy (Debian's
python3-numpy, python3-scipy), with every shared library they load, copied into one
directory; and that directory as a SIF image whose runscript runs its arguments."""

from __future__ import annotations

import os
import shutil
import subprocess

PYTHON = "/usr/bin/python3"
PACKAGES = ("numpy", "scipy")
DIST = "/usr/lib/python3/dist-packages"


def _copy(src: str, root: str) -> None:
    dest = os.path.join(root, src.lstrip("/"))
    if os.path.lexists(dest):
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.islink(src):
        target = os.readlink(src)
        os.symlink(target, dest)
        _copy(os.path.normpath(os.path.join(os.path.dirname(src), target)), root)
    elif os.path.isdir(src):
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest)


def _libraries(paths: list[str]) -> set[str]:
    """Every shared library (and the loader) the ELF files load, from ldd."""
    libs: set[str] = set()
    for chunk in range(0, len(paths), 200):
        res = subprocess.run(["ldd", *paths[chunk:chunk + 200]], capture_output=True,
                             text=True, check=False)
        for line in res.stdout.splitlines():
            parts = line.split()
            for p in parts:
                if p.startswith("/") and os.path.exists(p):
                    libs.add(p)
    return libs


def build_rootfs(root: str) -> int:
    """Fill `root` (which must not exist); returns the number of files."""
    from conformance.bundle import make_rootfs

    make_rootfs(root)  # busybox and the directories a container needs
    version = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    python = os.path.realpath(PYTHON)
    for path in (PYTHON, python, f"/usr/lib/python{version}",
                 *(os.path.join(DIST, p) for p in PACKAGES)):
        _copy(path, root)
    for lib in os.listdir(DIST):  # the packages' own bundled libraries (numpy.libs, ...)
        if lib.endswith(".libs") and lib.split(".")[0] in PACKAGES:
            _copy(os.path.join(DIST, lib), root)
    trees = [f"/usr/lib/python{version}/lib-dynload", *(os.path.join(DIST, p) for p in PACKAGES)]
    elves = [python] + [os.path.join(d, f) for base in trees
                        for d, _, files in os.walk(base) for f in files if ".so" in f]
    pending = _libraries(elves)
    seen: set[str] = set()
    while pending - seen:  # libraries of libraries
        batch = sorted(pending - seen)
        seen |= set(batch)
        for lib in batch:
            _copy(lib, root)
        pending |= _libraries(batch)
    return sum(len(files) for _, _, files in os.walk(root))


def build_image(root: str, image: str, ocirt: str) -> None:
    subprocess.run([ocirt, "sif", "create", "--rootfs", root, "--runscript", 'exec "$@"',
                    image], check=True, stdout=subprocess.DEVNULL)
