#!/usr/bin/env python3
"""Time from `ocirt sif bundle` to the container's first instruction, for a large image
mounted in place versus unpacked.

    sudo .venv/bin/python bench/sif/mount_vs_unpack.py [--size-mb 500] [--runs 3]
        [--drop-caches] [--workdir DIR] [--ocirt BINARY] [--json]

Builds a SIF image holding busybox plus SIZE MB of incompressible data (so the squashfs
partition really is that large), then, for each mode, repeatedly: `ocirt sif bundle`
(mounted: loop device + squashfs; unpacked: unsquashfs into the bundle), `ocirt run`
whose process writes one byte as its first action, and `ocirt sif unbundle`. The clock
starts before `sif bundle` and stops when the byte arrives. With --drop-caches the page
cache is dropped before each run (cold cache, like a first start on a node).

A benchmark, not a test: it needs root, about 3x SIZE of free disk, and takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
OCIRT = [sys.executable, "-m", "ocirt"]  # --ocirt BINARY replaces it


def build_image(work: str, size_mb: int) -> tuple[str, float]:
    from conformance.bundle import make_rootfs

    rootfs = make_rootfs(os.path.join(work, "rootfs"))
    data = os.path.join(rootfs, "data")
    os.makedirs(data)
    chunk = 4 << 20
    for i in range((size_mb << 20) // chunk):
        with open(os.path.join(data, f"blob{i:04d}"), "wb") as f:
            f.write(os.urandom(chunk))
    image = os.path.join(work, "big.sif")
    start = time.monotonic()
    subprocess.run([*OCIRT, "sif", "create", "--rootfs", rootfs, image], check=True)
    elapsed = time.monotonic() - start
    shutil.rmtree(rootfs)
    return image, elapsed


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def one_run(image: str, bundle: str, state: str, unpack: bool, cid: str) -> dict[str, float]:
    flags = ["--unpack"] if unpack else []
    start = time.monotonic()
    subprocess.run([*OCIRT, "sif", "bundle", *flags, "--exec", image, bundle, "--",
                    "/bin/busybox", "echo", "first"], check=True)
    bundled = time.monotonic()
    proc = subprocess.Popen([*OCIRT, "--root", state, "run", "--bundle", bundle, cid],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = proc.stdout.read(1)  # type: ignore[union-attr]
    arrived = time.monotonic()
    proc.stdout.read()  # type: ignore[union-attr]
    if proc.wait() != 0 or first != b"f":
        raise SystemExit(f"container run failed ({proc.returncode})")
    subprocess.run([*OCIRT, "sif", "unbundle", bundle], check=True)
    return {"bundle_s": bundled - start, "first_instruction_s": arrived - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--ocirt", help="the ocirt binary to time (default: this checkout's "
                    "module, run by this interpreter)")
    args = ap.parse_args()
    if args.ocirt:
        OCIRT[:] = [args.ocirt]
    if os.geteuid() != 0:
        raise SystemExit("run me as root (loop mounts and containers)")
    work = tempfile.mkdtemp(prefix="ocirt-sif-bench-", dir=args.workdir)
    try:
        image, build_s = build_image(work, args.size_mb)
        results: dict = {"size_mb": args.size_mb, "image_bytes": os.path.getsize(image),
                         "build_s": build_s, "cold_cache": args.drop_caches, "modes": {}}
        for mode in ("mounted", "unpacked"):
            runs = []
            for i in range(args.runs):
                if args.drop_caches:
                    drop_caches()
                runs.append(one_run(image, os.path.join(work, "bundle"),
                                    os.path.join(work, "state"), mode == "unpacked",
                                    f"bench-{mode}-{i}"))
            results["modes"][mode] = runs
        report(results, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"image: {results['image_bytes'] / 1e6:.0f} MB ({results['size_mb']} MB of data), "
          f"built in {results['build_s']:.1f} s; "
          f"{'cold' if results['cold_cache'] else 'warm'} page cache")
    print(f"{'mode':10} {'runs':>4} {'sif bundle (median)':>20} {'first instruction (median)':>27}"
          f" {'(min)':>8}")
    for mode, runs in results["modes"].items():
        bundle = statistics.median(r["bundle_s"] for r in runs)
        first = [r["first_instruction_s"] for r in runs]
        print(f"{mode:10} {len(runs):>4} {bundle:>19.3f}s {statistics.median(first):>26.3f}s"
              f" {min(first):>7.3f}s")


if __name__ == "__main__":
    sys.exit(main())
