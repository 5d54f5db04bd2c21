"""Fixtures shared by ocirt's own tests.

`ocirt` is the installed binary under test (OCIRT_BIN, else the repository's
.venv/bin/ocirt, else `ocirt` on PATH); each test gets its own `--root`, and every
container left in it is force-deleted afterwards. Bundles come from
`conformance.bundle` (busybox-static).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from conformance.bundle import default_config, make_bundle, make_rootfs  # noqa: E402
from conformance.runner import Runtime  # noqa: E402
from conformance.sandbox import in_chroot  # noqa: E402

IS_ROOT = os.geteuid() == 0


# In a chroot (as in the fresh-machine check) pivot_root, runc and `unshare --propagation
# private` cannot work.
IN_CHROOT = in_chroot()
_CGROUP_SEQ = itertools.count(1)


def ocirt_binary() -> str:
    env = os.environ.get("OCIRT_BIN")
    if env:
        return env
    local = os.path.join(REPO, ".venv", "bin", "ocirt")
    if os.path.exists(local):
        return local
    found = shutil.which("ocirt")
    if not found:
        pytest.exit("no ocirt binary: run contrib/setup.sh or set OCIRT_BIN", 2)
    return found


def user_runnable_ocirt(binary: str, user: str) -> str:
    """`binary` when `user` can run it; else a copy of the checkout's ocirt package in a
    directory everyone may read, with a launcher of its own (a checkout under /root is
    closed to the unprivileged test user, who must still run the checkout's code)."""
    import subprocess
    import tempfile

    if subprocess.run(["runuser", "-u", user, "--", "test", "-x", binary]).returncode == 0:
        return binary
    from ocirt import launcher

    top = tempfile.mkdtemp(prefix="ocirt-user-bin-")
    shutil.copytree(os.path.join(REPO, "ocirt"), os.path.join(top, "ocirt"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = os.path.realpath(sys.executable)
    paths = [top] + [p for p in launcher.site_paths(python)
                     if not os.path.realpath(p).startswith(REPO + os.sep) and p != REPO]
    dest = os.path.join(top, "ocirt-bin")
    with open(dest, "w") as f:
        f.write(launcher.TEMPLATE.format(python=python, paths=paths))
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o755 if name == "ocirt-bin" else 0o644)
    return dest


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ocirt_bin() -> str:
    return ocirt_binary()


@pytest.fixture
def state_root(tmp_path: Any) -> str:
    path = tmp_path / "state"
    return str(path)


@pytest.fixture
def ocirt(ocirt_bin: str, state_root: str) -> Iterator[Runtime]:
    rt = Runtime(ocirt_bin, state_root)
    yield rt
    rt.cleanup()
    leftovers = rt.ids()
    assert not leftovers, f"containers left behind: {leftovers}"


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory: Any) -> str:
    return make_rootfs(str(tmp_path_factory.mktemp("rootfs-template") / "rootfs"))


@pytest.fixture
def bundle(tmp_path: Any) -> Callable[..., str]:
    """bundle(args=[...], edit=fn(config)) -> a fresh bundle directory."""
    counter = [0]

    def make(args: list[str] | None = None, edit: Callable[[dict], Any] | None = None,
             config: dict | None = None) -> str:
        counter[0] += 1
        directory = str(tmp_path / f"bundle{counter[0]}")
        if config is not None:
            cfg = config
        else:
            cfg = default_config(args)
            # Unique per bundle, so that concurrent test sessions on one machine never
            # share a cgroup (the runtime's default is the container ID, e.g. "c1").
            cfg["linux"]["cgroupsPath"] = f"ocirt-test-{os.getpid()}-{next(_CGROUP_SEQ)}"
        if edit is not None:
            edit(cfg)
        return make_bundle(directory, config=cfg)

    return make


@pytest.fixture
def open_bundle(bundle: Callable[..., str]) -> Iterator[Callable[..., str]]:
    """bundle(...) in a directory every user can search (pytest's base directory is
    0700), for a container whose root is an unprivileged host uid (a user namespace)."""
    import tempfile

    made: list[str] = []

    def make(args: list[str], edit: Callable[[dict], Any] | None = None) -> str:
        top = tempfile.mkdtemp(prefix="ocirt-attrs-")
        os.chmod(top, 0o711)
        made.append(top)
        b = bundle(args, edit=edit)
        dest = os.path.join(top, "bundle")
        shutil.move(b, dest)
        return dest

    yield make
    for top in made:
        shutil.rmtree(top, ignore_errors=True)
