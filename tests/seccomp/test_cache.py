"""Compiled seccomp programs are reused across containers (ocirt.seccomp.cache)."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.root

PODMAN = "../shared/fixtures/engine-samples/podman-run-create.config.json"


def podman_profile() -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", PODMAN)
    if not os.path.exists(path):
        pytest.skip(f"podman's sample config is not here (no {PODMAN} beside the checkout)")
    with open(path) as f:
        return json.load(f)["linux"]["seccomp"]


def cache_files(root: str) -> list[str]:
    directory = os.path.join(root, "@cache", "seccomp")
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_the_same_profile_is_compiled_once(ocirt, bundle):
    profile = podman_profile()
    b = bundle(["sh", "-c", "grep Seccomp: /proc/self/status"],
               edit=lambda c: c["linux"].update(seccomp=profile))
    assert ocirt("run", "--bundle", b, "a").out.split() == ["Seccomp:", "2"]
    files = cache_files(ocirt.root)
    assert len(files) == 1
    path = os.path.join(ocirt.root, "@cache", "seccomp", files[0])
    stamp = os.stat(path).st_mtime_ns
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    assert ocirt("run", "--bundle", b, "b").out.split() == ["Seccomp:", "2"]
    assert cache_files(ocirt.root) == files and os.stat(path).st_mtime_ns == stamp


def test_a_state_root_the_cache_makes_is_private(ocirt, bundle):
    """The first container of a fresh --root has a filter: the cache makes the root
    before the container's directory does, and used to make it 0755 (runc's is 0700)."""
    deny = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    b = bundle(["true"], edit=lambda c: c["linux"].update(seccomp=deny))
    assert not os.path.exists(ocirt.root)
    assert ocirt("run", "--bundle", b, "a").rc == 0
    for path in (ocirt.root, os.path.join(ocirt.root, "@cache")):
        assert oct(os.stat(path).st_mode & 0o777) == "0o700", path


def test_a_damaged_cache_entry_is_recompiled(ocirt, bundle):
    deny = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    b = bundle(["sh", "-c", "mkdir /x 2>&1 || echo denied"],
               edit=lambda c: c["linux"].update(seccomp=deny))
    assert "denied" in ocirt("run", "--bundle", b, "a").out
    (name,) = cache_files(ocirt.root)
    with open(os.path.join(ocirt.root, "@cache", "seccomp", name), "wb") as f:
        f.write(b"garbage")
    assert "denied" in ocirt("run", "--bundle", b, "b").out
    assert ocirt.ids() == []


@pytest.mark.parametrize("cid", [".cache", ".sif-bundles", "@cache"])
def test_container_ids_never_meet_the_runtimes_own_directories(ocirt, bundle, cid):
    """A container may be named like the runtime's own directories used to be (runc
    allows `.cache`); `@`, which those use now, is refused as an ID."""
    profile = podman_profile()
    b = bundle(["sh", "-c", "grep Seccomp: /proc/self/status"],
               edit=lambda c: c["linux"].update(seccomp=profile))
    if cid.startswith("@"):
        result = ocirt("run", "--bundle", b, cid)
        assert result.rc == 1 and "invalid container ID format" in result.err
        return
    assert ocirt("create", "--bundle", b, cid).ok
    assert ocirt.ids() == [cid]
    other = bundle(["sh", "-c", "grep Seccomp: /proc/self/status"],
                   edit=lambda c: c["linux"].update(seccomp=profile))
    assert ocirt("run", "--bundle", other, "other").out.split() == ["Seccomp:", "2"]
    assert len(cache_files(ocirt.root)) == 1
    assert json.loads(ocirt("state", cid).out)["status"] == "created"
    assert ocirt("delete", "--force", cid).ok
    assert ocirt.ids() == [] and len(cache_files(ocirt.root)) == 1
