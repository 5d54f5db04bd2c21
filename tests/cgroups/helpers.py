"""Reading cgroups from the host side, independently of ocirt's own detection code."""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def mounts() -> dict[str, tuple[str, str]]:
    """hierarchy key ("memory", "cpu,cpuacct", "name=systemd", "" for cgroup2) ->
    (mount point, mount root), for the cgroup mounts under /sys/fs/cgroup."""
    found: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, post_fields = pre.split(), post.split()
            fstype, mountpoint, root = post_fields[0], fields[4], fields[3]
            if fstype not in ("cgroup", "cgroup2") or not mountpoint.startswith(CGROUP_ROOT):
                continue
            if fstype == "cgroup2":
                key = ""
            else:
                opts = [o for o in post_fields[2].split(",")
                        if o in _controllers() or o.startswith("name=")]
                key = ",".join(sorted(opts))
            found.setdefault(key, (mountpoint, root))
    return found


def _controllers() -> set[str]:
    with open("/proc/cgroups") as f:
        return {line.split()[0] for line in f if not line.startswith("#")}


def is_unified() -> bool:
    """A cgroup v2-only host: the cgroup2 mount and no v1 hierarchy with a controller."""
    known = mounts()
    return "" in known and not any(k and not k.startswith("name=") for k in known)


UNIFIED = is_unified()


def by_host(v1: object, v2: object) -> object:
    """What a cgroup v1 (or hybrid) host shows, or what a v2 host shows."""
    return v2 if UNIFIED else v1


def key_of(controller: str) -> str:
    """The /proc/<pid>/cgroup key holding `controller` ("" on a v2 host)."""
    if UNIFIED:
        return ""
    for key in mounts():
        if controller in key.split(","):
            return key
    raise KeyError(controller)


def relative_base(key: str, own: str) -> str:
    """Where a relative cgroupsPath goes for a runtime in cgroup `own`: below it, or
    below its parent on a v2 host (runc's fs2 rule: `own` holds processes)."""
    top = own in ("/", mounts()[""][0]) if UNIFIED and key == "" else True
    return own if top else os.path.dirname(own)


def membership(pid: int | str = "self") -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, key, path = line.rstrip("\n").split(":", 2)
            out[",".join(sorted(key.split(","))) if key else ""] = path
    return out


def host_dir(key: str, cgroup: str) -> str:
    mountpoint, root = mounts()[key]
    rel = os.path.relpath(cgroup, root)
    return os.path.normpath(os.path.join(mountpoint, rel))


def dirs_of(pid: int) -> dict[str, str]:
    """Every hierarchy's directory holding `pid`."""
    known = mounts()
    return {key: host_dir(key, path) for key, path in membership(pid).items() if key in known}


def own_dirs() -> dict[str, str]:
    return dirs_of(os.getpid())


def controller_dir(pid: int, controller: str) -> str:
    """The directory whose `controller` files apply to `pid` (on v2: its one cgroup,
    where freezer and devices are core files and an eBPF program)."""
    if UNIFIED:
        return dirs_of(pid)[""]
    for key, directory in dirs_of(pid).items():
        if controller in key.split(","):
            return directory
    raise KeyError(controller)


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def placement_dirs() -> list[str]:
    """Where our relative cgroupsPath values go, one directory per hierarchy."""
    return [relative_base(key, d) if key == "" else d for key, d in own_dirs().items()]


def leftover_dirs(name: str) -> list[str]:
    """Directories called `name` where our relative cgroupsPath values go."""
    return [os.path.join(d, name) for d in placement_dirs()
            if os.path.isdir(os.path.join(d, name))]


# --- a fake cgroupfs tree -------------------------------------------------------------------

V2_FILES = ("cgroup.procs", "cgroup.freeze", "cgroup.kill", "cgroup.controllers",
              "cgroup.subtree_control", "pids.max", "memory.max", "memory.low",
              "memory.swap.max", "memory.current", "cpu.weight", "cpu.max", "cpu.max.burst",
              "cpu.idle", "cpuset.cpus", "cpuset.mems", "io.weight", "io.max",
              "hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "rdma.max", "memory.high")


class FakeTree:
    def __init__(self, root: str) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        self.fail_once: dict[str, int] = {}  # relative path -> errno of the next write

    def write_raw(self, path: str, value: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(2, "No such file or directory", path)
        rel = os.path.relpath(path, self.root)
        if rel in self.fail_once:
            self.writes.append((rel, f"REFUSED {value}"))
            raise OSError(self.fail_once.pop(rel), "refused", path)
        self.writes.append((os.path.relpath(path, self.root), value))
        if path.endswith("cgroup.subtree_control"):  # +x enables, -x disables, as cgroupfs
            with open(path) as f:
                enabled = set(f.read().split())
            enabled = (enabled | {value[1:]}) if value[0] == "+" else (enabled - {value[1:]})
            value = " ".join(sorted(enabled))
        with open(path, "w") as f:
            f.write(value)
        if path.endswith("cgroup.freeze"):
            with open(os.path.join(os.path.dirname(path), "cgroup.events"), "w") as f:
                f.write(f"populated 1\nfrozen {value}\n")

    def wrote(self, name: str) -> list[str]:
        return [v for p, v in self.writes if p == name]

    def make_cgroup(self, rel: str, controllers: str = "cpu cpuset io memory pids hugetlb rdma",
                    files: tuple[str, ...] = ()) -> str:
        path = os.path.join(self.root, rel)
        os.makedirs(path, exist_ok=True)
        for name in files or V2_FILES:
            with open(os.path.join(path, name), "w") as f:
                f.write(controllers if name == "cgroup.controllers" else "")
        return path
