#!/usr/bin/env python3
"""What moving a process into a cgroup costs: the write `create` makes for every container.

    python3 bench/cgroup_move.py [HIERARCHY]     # as root; default: /sys/fs/cgroup on a
                                                 # v2 host, /sys/fs/cgroup/pids on v1

A child cgroup is made below this process's own cgroup of HIERARCHY (a cgroup v1
hierarchy, or the v2 mount) and removed at the end. Two ways to move a fresh process
into it are timed, each several times:

  procs   the parent writes the child's PID to cgroup.procs (what runc and ocirt do);
          the kernel takes its threadgroup lock for writing, which waits for an RCU
          grace period when no other writer came just before
  self    the child writes "0" (itself) to the v1 `tasks` file: a single thread moving
          itself skips that lock (v1 only; v2's cgroup.threads refuses a move into
          another domain cgroup)

Why it matters: every `create` pays the first kind once, and its init waits for it
(README, Performance).
"""

from __future__ import annotations

import os
import statistics
import sys
import time


def own_cgroup(hierarchy: str) -> str:
    """This process's cgroup directory in `hierarchy` (its line of /proc/self/cgroup)."""
    with open(os.path.join(hierarchy, "cgroup.procs")) as f:
        mine = str(os.getpid()) in f.read().split()
    if mine:
        return hierarchy
    name = os.path.basename(hierarchy.rstrip("/"))
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if name in controllers.split(",") or (not controllers and name == "cgroup"):
                return os.path.join(hierarchy, path.lstrip("/"))
    raise SystemExit(f"{hierarchy}: this process's cgroup there not found")


def move_by_parent(target: str) -> float:
    """Seconds the parent's write of a child's PID to cgroup.procs takes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    start = time.perf_counter()
    fd = os.open(os.path.join(target, "cgroup.procs"), os.O_WRONLY)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.write(w, b"x")
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
    return elapsed


def move_self(target: str) -> float:
    """Seconds a child's write of "0" to the v1 tasks file takes (measured in the child)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        start = time.perf_counter()
        fd = os.open(os.path.join(target, "tasks"), os.O_WRONLY)
        os.write(fd, b"0")
        os.close(fd)
        os.write(w, repr(time.perf_counter() - start).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 64)
    os.close(r)
    return float(out)


def main() -> int:
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    default = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/pids"
    hierarchy = sys.argv[1] if len(sys.argv) > 1 else default
    target = os.path.join(own_cgroup(hierarchy), f"ocirt-bench-move-{os.getpid()}")
    os.mkdir(target)
    try:
        ways = [("procs", move_by_parent)]
        if os.path.exists(os.path.join(target, "tasks")):
            ways.append(("self", move_self))
        for name, way in ways:
            times = []
            for _ in range(10):
                time.sleep(0.2)  # past the grace period another write may have begun
                times.append(way(target) * 1000)
            print(f"{name:6} median {statistics.median(times):6.2f} ms  "
                  f"(min {min(times):.2f}, max {max(times):.2f}, 10 moves)")
    finally:
        os.rmdir(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
