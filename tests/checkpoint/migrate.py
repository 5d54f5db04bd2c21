"""The two halves of the checkpoint-migration test (tests/checkpoint/test_two_boots.py),
each run inside a separate boot of the test-host guest:

    python3 -m tests.checkpoint.migrate checkpoint OCIRT OUT    # boot 1
    python3 -m tests.checkpoint.migrate restore OCIRT IN        # boot 2

Boot 1 runs a counting busybox container, checkpoints it into a signed SIF and writes
the SIF, the public key and the counter file to OUT (the harness copies it out). Boot
2 gets that directory read-only (IN), copies the SIF, makes the bundle again at the same
path, restores under a new state root and checks that the counter goes on from where it
stopped, after a tampered copy of the same SIF was refused. Only the checkout and
the guest's Debian packages are needed (no venv: OCIRT is a launcher made with
`python3 -m ocirt.launcher`), so neither boot has to run contrib/setup.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from conformance.bundle import default_config, make_bundle
from conformance.runner import Runtime, wait_for
from tests.checkpoint.helpers import COUNTER, numbers, run_detached, tamper

TOP = "/var/tmp/ocirt-migrate"  # the same path in both boots: the config names it
BUNDLE, OUT = f"{TOP}/bundle", f"{TOP}/out"
CID = "migrated"
FILES = ("app.sif", "key.pub", "count", "stopped.json")


def _config() -> dict:
    cfg = default_config(COUNTER)
    cfg["linux"]["cgroupsPath"] = "ocirt-migrate"
    cfg["mounts"].append({"destination": "/out", "type": "bind", "source": OUT,
                          "options": ["rbind", "rw"]})
    return cfg


def _fresh_bundle() -> None:
    shutil.rmtree(TOP, ignore_errors=True)
    os.makedirs(OUT)
    make_bundle(BUNDLE, config=_config())


def _ocirt(binary: str, *args: str) -> None:
    subprocess.run([binary, *args], check=True, capture_output=True)


def checkpoint(binary: str, dest: str) -> None:
    """Boot 1: count, checkpoint into a signed SIF, hand the SIF and the count out."""
    _fresh_bundle()
    rt = Runtime(binary, "/run/ocirt-migrate-1")
    key = os.path.join(TOP, "key")
    _ocirt(binary, "sif", "keygen", "-t", "ed25519", key)
    sif = os.path.join(TOP, "app.sif")
    _ocirt(binary, "sif", "new", "--capacity", "200", sif)
    try:
        run_detached(rt, CID, BUNDLE)
        count = os.path.join(OUT, "count")
        assert wait_for(lambda: len(numbers(count)) >= 5, timeout=60), numbers(count)
        r = rt("checkpoint", "--sif", sif, "--sign-key", key + ".key", CID)
        assert r.ok, r
        assert rt.status(CID) is None, "the checkpointed container is still there"
        stopped = numbers(count)
        time.sleep(1)
        assert numbers(count) == stopped, "the container counted on after its checkpoint"
    finally:
        rt.cleanup()
    assert rt.ids() == []
    for name, src in (("app.sif", sif), ("key.pub", key + ".pub"), ("count", count)):
        shutil.copy(src, os.path.join(dest, name))
    with open(os.path.join(dest, "stopped.json"), "w") as f:
        json.dump({"last": stopped[-1], "lines": len(stopped)}, f)
    size = os.path.getsize(sif)
    shutil.rmtree(TOP)
    print(f"migrate: checkpointed {CID} at {stopped[-1]} into {dest}/app.sif ({size} bytes)")


def restore(binary: str, src: str) -> None:
    """Boot 2: a tampered copy is refused; the copy restores and counts on."""
    missing = [n for n in FILES if not os.path.exists(os.path.join(src, n))]
    assert not missing, f"boot 1 handed over no {missing} in {src}"
    with open(os.path.join(src, "stopped.json")) as f:
        stopped = json.load(f)
    _fresh_bundle()
    count = os.path.join(OUT, "count")
    shutil.copy(os.path.join(src, "count"), count)
    assert numbers(count)[-1] == stopped["last"]
    copy, tampered = os.path.join(TOP, "copied.sif"), os.path.join(TOP, "tampered.sif")
    shutil.copy(os.path.join(src, "app.sif"), copy)
    shutil.copy(copy, tampered)
    tamper(tampered, "pstree.img")
    public = os.path.join(src, "key.pub")
    rt = Runtime(binary, os.path.join(TOP, "new-root"))
    try:
        with open(os.devnull, "wb") as null:
            r = rt("restore", "-d", "--sif", tampered, "--key", public, "--bundle", BUNDLE,
                   CID, stdout=null)
            assert r.rc == 1 and "verification failed" in r.err, r
            assert len(r.err.strip().splitlines()) == 1, r.err
            assert rt.status(CID) is None and numbers(count)[-1] == stopped["last"]
            r = rt("restore", "-d", "--sif", copy, "--key", public, "--bundle", BUNDLE, CID,
                   stdout=null)
        assert r.ok, r
        assert rt.status(CID) == "running"
        assert wait_for(lambda: len(numbers(count)) >= stopped["lines"] + 3, timeout=60)
        after = numbers(count)[stopped["lines"]:]
        assert after[0] == stopped["last"] + 1, (stopped, after[:3])
    finally:
        rt.cleanup()
    assert rt.ids() == []
    shutil.rmtree(TOP)
    print(f"migrate: tampered copy refused; restored {CID} counted on: "
          f"{stopped['last']} -> {after[:3]}")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("checkpoint", "restore"):
        sys.stderr.write("usage: python3 -m tests.checkpoint.migrate checkpoint|restore "
                         "OCIRT DIR\n")
        return 2
    (checkpoint if argv[0] == "checkpoint" else restore)(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
