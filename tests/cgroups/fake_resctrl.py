"""A fake resctrl filesystem in a plain directory, for hosts without Intel RDT.

Only what kernfs does on its own is faked: `mkdir` of a group makes its `tasks`,
`schemata` and `mon_groups` (a MON group gets `tasks` only), `rmdir` removes a group with
its files. ocirt's writes go to the plain files as they are (O_APPEND: each write is kept,
one line per task written), so the write logic under test is ocirt's own.

`python -m tests.cgroups.fake_resctrl ROOT ARGS...` runs the ocirt CLI with the fake
installed at ROOT: a real container, created, exec'd into, updated and deleted by the
real code paths, with only the resctrl mount point and kernfs's mkdir/rmdir replaced.
"""

from __future__ import annotations

import os
import shutil
import sys

from ocirt import resctrl


def make_root(root: str, cat: bool = True, mba: bool = True, mon: bool = True) -> str:
    """A resctrl root: its own group files, and info/ with what the 'hardware' has."""
    _populate(root, mon)
    for name, present in (("L3", cat), ("MB", mba), ("L3_MON", mon)):
        if present:
            os.makedirs(os.path.join(root, "info", name), exist_ok=True)
    with open(os.path.join(root, "info", "last_cmd_status"), "w") as f:
        f.write("ok\n")
    return root


def _populate(path: str, mon: bool) -> None:
    os.makedirs(path, exist_ok=True)
    for name in ("tasks", "schemata"):
        open(os.path.join(path, name), "a").close()
    if mon:
        os.makedirs(os.path.join(path, "mon_groups"), exist_ok=True)


def fake_mkdir(rec: dict, path: str) -> None:
    if os.path.isdir(path):
        return
    os.mkdir(path)
    if os.path.basename(os.path.dirname(path)) == "mon_groups":
        open(os.path.join(path, "tasks"), "a").close()
    else:
        _populate(path, os.path.isdir(os.path.join(rec["root"], "mon_groups")))


def fake_rmdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def install(root: str) -> None:
    resctrl.find_root = lambda: root  # type: ignore[assignment]
    resctrl._mkdir = fake_mkdir  # type: ignore[assignment]
    resctrl._rmdir = fake_rmdir  # type: ignore[assignment]


def lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


if __name__ == "__main__":
    install(sys.argv[1])
    from ocirt.cli import main

    sys.exit(main(sys.argv[2:]))
