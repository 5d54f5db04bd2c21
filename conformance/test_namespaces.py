"""namespaces: new ones for each listed type, inherited ones for the rest, joining by path,
user id mappings, time offsets, and the sysctls that live in them."""

from __future__ import annotations

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

PROC_NAME = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
             "cgroup": "cgroup", "user": "user", "time": "time"}
MAPPING = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def runtime_ns(h, kind):
    """The runtime namespace of `kind`: the sandbox's for mount and cgroup, else ours."""
    sb = h.info.sandbox
    if sb is not None and kind in ("mnt", "cgroup"):
        return procfs.ns(sb.pid, kind)
    return procfs.ns("self", kind)


def _namespaces(add=(), drop=()):
    def edit(cfg):
        spaces = [n for n in cfg["linux"]["namespaces"] if n["type"] not in drop]
        spaces += [n if isinstance(n, dict) else {"type": n} for n in add]
        cfg["linux"]["namespaces"] = spaces
        if "uts" in drop:
            cfg.pop("hostname", None)
    return edit


def _sleeping(h, edit):
    c = h.start(h.bundle(["sleep", "1000"], edit=edit))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    return c


@pytest.mark.parametrize("kind", ["pid", "network", "ipc", "uts", "mount", "cgroup"])
@case("NS-01", "config-linux.md#namespaces", "MUST")
def test_new_namespace(h, kind):
    """each listed namespace type without a path is a new namespace"""
    c = _sleeping(h, _namespaces(add=[kind] if kind == "cgroup" else []))
    name = PROC_NAME[kind]
    assert procfs.ns(c.pid, name) != runtime_ns(h, name)


@pytest.mark.parametrize("kind", ["pid", "network", "ipc", "uts", "cgroup"])
@case("NS-02", "config-linux.md#namespaces", "MUST")
def test_inherited_namespace(h, kind):
    """a type not listed is the runtime's own namespace"""
    c = _sleeping(h, _namespaces(drop=[kind]))
    name = PROC_NAME[kind]
    assert procfs.ns(c.pid, name) == runtime_ns(h, name)


@pytest.mark.parametrize("kind", ["network", "ipc", "uts"])
@case("NS-03", "config-linux.md#namespaces path", "MUST")
def test_join_by_path(h, kind):
    """a namespace with a path is joined, not created"""
    first = h.create(h.bundle(["sleep", "1000"]))
    name = PROC_NAME[kind]
    joined = {"type": kind, "path": f"/proc/{first.pid}/ns/{name}"}
    edit = _namespaces(drop=[kind], add=[joined])
    c = h.create(h.bundle(["sleep", "1000"], edit=edit))
    assert procfs.ns(c.pid, name) == procfs.ns(first.pid, name)


@case("NS-04", "config-linux.md#namespaces path", "MUST")
def test_join_wrong_type_fails(h):
    """a path to a namespace of another type is an error"""
    first = h.create(h.bundle(["sleep", "1000"]))
    edit = _namespaces(drop=["network"],
                       add=[{"type": "network", "path": f"/proc/{first.pid}/ns/uts"}])
    c = h.create(h.bundle(["sleep", "1000"], edit=edit), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == [first.cid]


@case("NS-05", "config-linux.md#namespaces path", "MUST")
def test_join_missing_path_fails(h):
    """a namespace path that does not exist is an error"""
    edit = _namespaces(drop=["ipc"], add=[{"type": "ipc", "path": h.path("no-such-ns")}])
    c = h.create(h.bundle(["sleep", "1000"], edit=edit), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []


@deviation("crun", "crun 1.8.1 accepts a duplicated namespace type")
@case("NS-06", "config-linux.md#namespaces", "MUST")
def test_duplicate_namespace_fails(h):
    """the same namespace type listed twice is an error"""
    c = h.create(h.bundle(["true"], edit=_namespaces(add=["pid"])), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []


@needs("userns")
@case("NS-07", "config-linux.md#user-namespace-mappings", "MUST")
def test_user_namespace_mappings(h):
    """uidMappings and gidMappings are the user namespace's maps; root inside is mapped"""
    def edit(cfg):
        _namespaces(add=["user"])(cfg)
        cfg["linux"]["uidMappings"] = MAPPING
        cfg["linux"]["gidMappings"] = MAPPING
    c = h.start(h.bundle(["sleep", "1000"], edit=edit, public=True))
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5)
    assert procfs.ns(c.pid, "user") != procfs.ns("self", "user")
    for which in ("uid_map", "gid_map"):
        with open(f"/proc/{c.pid}/{which}") as f:
            assert f.read().split() == ["0", "100000", "65536"], which
    st = procfs.status(c.pid)
    assert st["Uid"].split() == ["100000"] * 4 and st["Gid"].split() == ["100000"] * 4
    out = h.output(h.bundle(["sh", "-c", "id -u; touch /tmp/f && echo write-ok"], edit=edit,
                            public=True))
    assert out.split() == ["0", "write-ok"]


@needs("timens")
@deviation("runc", "runc 1.1.5 has no time namespace support (added in runc 1.2)")
@deviation("crun", "crun 1.8.1 fails here: 'write to sync socket: Connection reset by peer'")
@case("NS-08", "config-linux.md#offset-for-time-namespace", "MUST")
def test_time_namespace_offsets(h):
    """a time namespace gets linux.timeOffsets (host: timens_offsets; inside: uptime)"""
    def edit(cfg):
        _namespaces(add=["time"])(cfg)
        cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400, "nanosecs": 0},
                                       "boottime": {"secs": 172800, "nanosecs": 0}}
    c = _sleeping(h, edit)
    assert procfs.ns(c.pid, "time") != procfs.ns("self", "time")
    with open(f"/proc/{c.pid}/timens_offsets") as f:
        offsets = {ln.split()[0]: ln.split()[1:] for ln in f if ln.strip()}
    assert offsets == {"monotonic": ["86400", "0"], "boottime": ["172800", "0"]}
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    inside = float(h.output(h.bundle(["cat", "/proc/uptime"], edit=edit)).split()[0])
    assert inside >= host_uptime + 172800 - 5


@case("NS-09", "config-linux.md#namespaces", "MUST")
def test_pid_namespace_inside(h):
    """inside a new pid namespace the container process is pid 1"""
    assert h.output(h.bundle(["sh", "-c", "echo pid=$$"])).strip() == "pid=1"


@case("NS-10", "config-linux.md#namespaces", "MUST")
def test_network_namespace_inside(h):
    """a new network namespace holds only the loopback device"""
    out = h.output(h.bundle(["cat", "/proc/net/dev"]))
    devices = [ln.split(":")[0].strip() for ln in out.splitlines()[2:]]
    assert devices == ["lo"], out


@case("NS-11", "config-linux.md#namespaces", "MUST")
def test_cgroup_namespace_inside(h):
    """in a new cgroup namespace the container's own cgroups are the root"""
    out = h.output(h.bundle(["cat", "/proc/self/cgroup"], edit=_namespaces(add=["cgroup"])))
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and all(ln.split(":", 2)[2] == "/" for ln in lines), out


SYSCTLS = {"kernel.msgmax": "8193", "net.ipv4.tcp_keepalive_probes": "5"}


def _host_sysctls():
    values = {}
    for key in SYSCTLS:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            values[key] = f.read().strip()
    return values


@case("NS-12", "config-linux.md#sysctl", "MUST")
def test_sysctl(h):
    """linux.sysctl values are set in the container's namespaces, not on the host"""
    before = _host_sysctls()
    paths = ["/proc/sys/" + k.replace(".", "/") for k in SYSCTLS]
    b = h.bundle(["cat", *paths], edit=lambda cfg: cfg["linux"].update(sysctl=SYSCTLS))
    try:
        out = h.output(b)
    finally:
        after = _host_sysctls()
        for key, value in before.items():
            if after[key] != value:
                _write_sysctl(key, value)
    assert out.split() == list(SYSCTLS.values())
    assert after == before, "the container's sysctls changed the host's (restored)"


@pytest.mark.parametrize("key,drop", [("net.ipv4.tcp_keepalive_probes", "network"),
                                      ("vm.swappiness", None)])
@case("NS-13", "runc: linux.sysctl", "RUNC")
def test_sysctl_outside_namespace_fails(h, key, drop):
    """a sysctl that would change the host (host namespace, or not namespaced) fails"""
    before = _read_sysctl(key)

    def edit(cfg):
        cfg["linux"]["sysctl"] = {key: str(int(before) - 1)}
        if drop:
            _namespaces(drop=[drop])(cfg)
    try:
        assert h.run(h.bundle(["true"], edit=edit)).rc != 0
    finally:
        after = _read_sysctl(key)
        if after != before:
            _write_sysctl(key, before)
    assert after == before, f"{key} on the host was changed (restored)"


def _read_sysctl(key):
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


def _write_sysctl(key, value):
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@case("NS-14", "runc: hostname", "RUNC")
def test_hostname_without_uts_fails(h):
    """hostname without a private UTS namespace fails (it would rename the host)"""
    def edit(cfg):
        _namespaces(drop=["uts"])(cfg)
        cfg["hostname"] = "conformance-must-not-leak"
    before = _read_sysctl("kernel.hostname")
    try:
        assert h.run(h.bundle(["true"], edit=edit)).rc != 0
    finally:
        after = _read_sysctl("kernel.hostname")
        if after != before:
            _write_sysctl("kernel.hostname", before)
    assert after == before, "the host's hostname was changed (restored)"
