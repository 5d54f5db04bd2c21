"""Fixtures for the SIF tests: keys, the reference implementation (a small Go driver
built against Debian's golang-github-sylabs-sif-dev), and a leak check that fails a test
leaving a loop device, mount, FUSE daemon or gpg-agent behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.sif.helpers import (
    FIXTURES,
    GO_SIF,
    HERE,
    attached_loops,
    fixture,
    go_reference_missing,
    make_like,
    mounts_under,
    processes_mentioning,
    run_sif,
    stray_gpg_agents,
    wait_detached,
)


@pytest.fixture
def sif(tmp_path: Any) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """`ocirt sif ...`; a bundle a failed test did not unbundle is unbundled afterwards
    (and the test fails: tests clean up after themselves)."""
    made: list[tuple[str, str | None]] = []

    def run(*args: str, **kw: Any) -> subprocess.CompletedProcess:
        if args and args[0] == "bundle":
            head = list(args[: args.index("--")] if "--" in args else args)
            made.append((head[-1], kw.get("user")))  # bundle [flags] IMAGE BUNDLE [-- ...]
        return run_sif(*args, **kw)

    yield run
    left = [(b, u) for b, u in made if os.path.exists(os.path.join(b, ".ocirt-sif.json"))]
    for bundle, user in left:
        run_sif("unbundle", bundle, user=user)
    assert not left, f"bundles left mounted: {[b for b, _ in left]}"


@pytest.fixture
def copy_fixture(tmp_path: Any) -> Callable[[str], str]:
    """A private, writable copy of a reference file."""
    def copy(name: str) -> str:
        dest = str(tmp_path / name)
        shutil.copyfile(fixture(name), dest)
        os.chmod(dest, 0o644)
        return dest
    return copy


@pytest.fixture(scope="session")
def images_like(tmp_path_factory: Any) -> Callable[[str], list[str]]:
    """name -> the images a test of reference file `name` runs on: one with the same
    objects made by ocirt's own writer (helpers.make_like), always, so that a clone
    without ../shared tests it too; and the reference file itself where ../shared has
    it (a test of both never skips, and checks the reference's bytes where it can)."""
    made: dict[str, str] = {}

    def images(name: str) -> list[str]:
        if name not in made:
            made[name] = make_like(name, str(tmp_path_factory.mktemp("like")))
        reference = os.path.join(FIXTURES, name)
        return [made[name]] + ([reference] if os.path.exists(reference) else [])
    return images


@pytest.fixture(scope="session")
def pem_keys(tmp_path_factory: Any) -> dict[str, tuple[str, str]]:
    """kind -> (private PEM, public PEM) for every key type DSSE signing supports."""
    from ocirt.sif import keys

    base = tmp_path_factory.mktemp("keys")
    out = {}
    for kind, curve, bits in (("p256", "p256", 0), ("p384", "p384", 0), ("p521", "p521", 0),
                              ("ed25519", "", 0), ("rsa", "", 2048)):
        key = keys.generate("ecdsa" if kind.startswith("p") else kind, curve or "p256",
                            bits or 2048)
        out[kind] = keys.write_pair(key, str(base / kind))
    return out


@pytest.fixture(scope="session")
def refsif(tmp_path_factory: Any) -> str:
    """The reference driver (tests/sif/refharness/main.go), built offline in GOPATH
    mode against /usr/share/gocode."""
    why = go_reference_missing()
    if why:
        pytest.skip(why)
    gopath = tmp_path_factory.mktemp("gopath")
    src = gopath / "src" / "refsif"
    src.mkdir(parents=True)
    shutil.copy(os.path.join(HERE, "refharness", "main.go"), src / "main.go")
    # The module path is github.com/sylabs/sif/v2; GOPATH mode needs that directory.
    v2 = gopath / "src" / "github.com" / "sylabs" / "sif"
    v2.mkdir(parents=True)
    os.symlink(GO_SIF, v2 / "v2")
    binary = str(gopath / "refsif")
    env = dict(os.environ, GO111MODULE="off", GOPATH=f"{gopath}:/usr/share/gocode",
               GOCACHE=str(gopath / "cache"), GOFLAGS="", GOPROXY="off", CGO_ENABLED="0",
               HOME=str(gopath))
    res = subprocess.run(["go", "build", "-o", binary, "."], cwd=src, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        pytest.skip(f"building the reference driver failed: {res.stderr[-500:]}")
    return binary


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Any) -> Iterator[None]:
    """Fails the test if it leaves a loop device on, a mount in, or a process about
    its temporary directory."""
    base = os.path.realpath(str(tmp_path))
    agents_before = set(stray_gpg_agents())
    yield
    assert wait_detached(base), f"loop devices left attached: {attached_loops(base)}"
    assert not mounts_under(base), f"mounts left behind: {mounts_under(base)}"
    assert not processes_mentioning(base), \
        f"processes left behind: {processes_mentioning(base)}"
    agents = set(stray_gpg_agents()) - agents_before
    assert not agents, f"gpg-agents left running: {agents}"
