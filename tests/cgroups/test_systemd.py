"""`--systemd-cgroup`: path parsing, the D-Bus wire format, the transient unit asked of a
fake systemd on a private dbus-daemon (which checks every message we send), and the
clear refusal on a host without systemd."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading

import pytest

from ocirt.cgroups import dbus, sdprops, systemd
from ocirt.cgroups.detect import Hierarchy, Layout
from ocirt.cgroups.resources import DeviceRule
from ocirt.cgroups.resources import parse as parse_resources
from ocirt.cgroups.systemd import SystemdManager, expand_slice, parse_path, unit_cgroup
from ocirt.errors import OcirtError


@pytest.mark.parametrize("path,slice_,unit", [
    ("system.slice:libpod:abc", "system.slice", "libpod-abc.scope"),
    (":ocirt:x", "system.slice", "ocirt-x.scope"),
    ("machine.slice::x", "machine.slice", "x.scope"),
    ("user.slice:p:pod.slice", "user.slice", "pod.slice"),
    ("", "system.slice", "ocirt-c1.scope"),
])
def test_parse_path(path, slice_, unit):
    assert parse_path(path, "c1") == (slice_, unit)


@pytest.mark.parametrize("path", ["a:b", "/abs/path", "notaslice:p:n", "x.slice:p:"])
def test_parse_path_errors(path):
    with pytest.raises(OcirtError, match="slice:prefix:name|not a slice|invalid unit"):
        parse_path(path, "c1")


def test_slice_nesting():
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == "/"
    assert unit_cgroup("machine-pod.slice", "x.scope") == "/machine.slice/machine-pod.slice/x.scope"
    with pytest.raises(OcirtError, match="invalid slice name"):
        expand_slice("a--b.slice")


def test_wire_format_of_a_method_call():
    """The bytes of Hello(), as the D-Bus specification lays them out."""
    msg = dbus.Message(dbus.METHOD_CALL, {dbus.F_PATH: "/org/freedesktop/DBus",
                                          dbus.F_MEMBER: "Hello",
                                          dbus.F_DESTINATION: "org.freedesktop.DBus"}, [],
                       serial=1)
    data = msg.encode()
    assert data[:4] == b"l\x01\x00\x01"
    # fields: PATH (8-byte aligned struct: 1+3 sig, 4+21+1 string = 30 -> 32),
    # MEMBER (4 + 4+5+1 = 14 -> 48), DESTINATION (4 + 4+20+1 = 29): 77 bytes, no padding
    assert struct.unpack_from("<III", data, 4) == (0, 1, 77)
    assert len(data) == 16 + 77 + 3  # the header is padded to 8 before the (empty) body
    assert data[16:20] == b"\x01\x01o\x00"  # field PATH, variant signature "o"
    assert struct.unpack_from("<I", data, 20)[0] == len("/org/freedesktop/DBus")
    assert len(data) % 8 == 0
    back = dbus.Message.decode(data)
    assert back.member == "Hello" and back.fields[dbus.F_PATH] == "/org/freedesktop/DBus"


def test_marshalling_round_trip():
    sig = "ssa(sv)a(sa(sv))ybtxd"
    values = ["u.scope", "replace", [("PIDs", ("au", [1, 2])), ("Delegate", ("b", True)),
                                     ("Slice", ("s", "x.slice"))],
              [], 7, True, 1 << 40, -3, 1.5]
    msg = dbus.Message(dbus.METHOD_CALL, {dbus.F_PATH: "/", dbus.F_MEMBER: "M",
                                          dbus.F_SIGNATURE: sig}, values)
    assert dbus.Message.decode(msg.encode()).body == [
        "u.scope", "replace", [("PIDs", ("au", [1, 2])), ("Delegate", ("b", True)),
                               ("Slice", ("s", "x.slice"))], [], 7, True, 1 << 40, -3, 1.5]
    assert dbus.split_signature(sig)[:4] == ["s", "s", "a(sv)", "a(sa(sv))"]


# --- against a real bus ----------------------------------------------------------------------

class FakeSystemd(threading.Thread):
    """Owns org.freedesktop.systemd1 on the bus and answers like systemd: a job path,
    then JobRemoved(done); `refuse` makes StartTransientUnit fail."""

    def __init__(self, bus: str, refuse: bool = False) -> None:
        super().__init__(daemon=True)
        self.conn = dbus.Connection(bus)
        self.conn.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                       "RequestName", "su", systemd.SYSTEMD, 0)
        self.refuse = refuse
        self.calls: list[tuple[str, list]] = []

    def run(self) -> None:
        jobs = 0
        while True:
            try:
                call = self.conn.receive()
            except (OSError, OcirtError):
                return
            if call.kind != dbus.METHOD_CALL:
                continue
            self.calls.append((call.member, call.body))
            sender = call.fields[dbus.F_SENDER]
            if self.refuse and call.member == "StartTransientUnit":
                self.conn.send(dbus.Message(dbus.ERROR, {
                    dbus.F_REPLY_SERIAL: call.serial, dbus.F_DESTINATION: sender,
                    dbus.F_ERROR: "org.freedesktop.systemd1.UnitExists", dbus.F_SIGNATURE: "s"},
                    [f"Unit {call.body[0]} already exists."]))
                continue
            if call.member in ("StartTransientUnit", "StopUnit"):
                jobs += 1
                job = f"/org/freedesktop/systemd1/job/{jobs}"
                self.reply(call, "o", [job])
                self.conn.send(dbus.Message(dbus.SIGNAL, {
                    dbus.F_PATH: systemd.SYSTEMD_PATH, dbus.F_INTERFACE: systemd.SYSTEMD_MANAGER,
                    dbus.F_MEMBER: "JobRemoved", dbus.F_SIGNATURE: "uoss"},
                    [jobs, job, call.body[0], "done"]))
            else:
                self.reply(call, "", [])

    def reply(self, call: dbus.Message, sig: str, body: list) -> None:
        fields = {dbus.F_REPLY_SERIAL: call.serial, dbus.F_DESTINATION: call.fields[dbus.F_SENDER]}
        if sig:
            fields[dbus.F_SIGNATURE] = sig
        self.conn.send(dbus.Message(dbus.METHOD_RETURN, fields, body))


@pytest.fixture
def bus(tmp_path):
    if shutil.which("dbus-daemon") is None:
        pytest.skip("needs dbus-daemon")
    path = str(tmp_path / "bus")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                               f"--address=unix:path={path}", "--print-address"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        daemon.stdout.readline()  # the daemon listens once it printed its address
        yield path
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.fixture
def fake_layout(tmp_path, monkeypatch):
    """One memory hierarchy in a scratch directory, where the fake systemd 'made' the
    scope (so nothing is created in the real cgroupfs)."""
    root = tmp_path / "memory"
    scope = root / "machine.slice" / "libpod-abc.scope"
    scope.mkdir(parents=True)
    (scope / "cgroup.procs").write_text("")
    layout = Layout([Hierarchy("memory", str(root), "/", "/")], None)
    monkeypatch.setattr(systemd, "detect", lambda: layout)
    return scope


def test_transient_unit_over_dbus(bus, fake_layout):
    fake = FakeSystemd(bus)
    fake.start()
    mgr = SystemdManager("machine.slice", "libpod-abc.scope", "abc", bus=bus)
    mgr.add(4242)
    starts = [body for member, body in fake.calls if member == "StartTransientUnit"]
    assert len(starts) == 1
    unit, mode, props, aux = starts[0]
    assert (unit, mode, aux) == ("libpod-abc.scope", "replace", [])
    props = dict(props)
    assert props["PIDs"] == ("au", [4242])
    assert props["Slice"] == ("s", "machine.slice")
    assert props["Delegate"] == ("b", True)
    assert "Subscribe" in [member for member, _ in fake.calls]
    assert (fake_layout / "cgroup.procs").read_text() == "4242"  # joined through cgroupfs
    again = systemd.SystemdManager.from_state(mgr.state())
    assert again.paths() == {"memory": str(fake_layout)}
    again.destroy()
    assert ("StopUnit", ["libpod-abc.scope", "replace"]) in fake.calls
    assert fake_layout.exists()  # systemd made it: systemd removes it


def test_a_refused_unit_is_a_clear_error(bus, fake_layout):
    FakeSystemd(bus, refuse=True).start()
    mgr = SystemdManager("machine.slice", "libpod-abc.scope", "abc", bus=bus)
    with pytest.raises(OcirtError, match="org.freedesktop.systemd1.UnitExists: Unit "
                                         "libpod-abc.scope already exists"):
        mgr.add(4242)


def test_no_bus_is_a_clear_error(tmp_path):
    with pytest.raises(OcirtError, match="dbus: connect to .*nobus"):
        dbus.Connection(str(tmp_path / "nobus"))


@pytest.mark.root
@pytest.mark.skipif(os.path.isdir(systemd.SYSTEMD_RUNNING), reason="systemd runs here")
def test_without_systemd_create_fails_clearly(ocirt, bundle):
    b = bundle(["true"], edit=lambda cfg: cfg["linux"].update(cgroupsPath="system.slice:t:x"))
    rt = type(ocirt)(ocirt.binary, ocirt.root, ["--systemd-cgroup"])
    r = rt("run", "--bundle", b, "c1")
    assert r.rc == 1 and "--systemd-cgroup: systemd is not running on this host" in r.err, r
    assert ocirt.ids() == []


# --- resources as unit properties (ocirt.cgroups.sdprops) ------------------------------------

LIMITS = {"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
          "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-3,8",
                  "mems": "0"},
          "pids": {"limit": 50}, "blockIO": {"weight": 500},
          "unified": {"memory.high": "max", "memory.min": "4096"}}


def _props(raw, unified=True, rules=None):
    res = parse_resources(raw)
    return dict(sdprops.properties(res, res, unified, rules))


def test_v2_properties_follow_runc():
    props = _props(LIMITS)
    assert props["MemoryMax"] == ("t", 64 << 20)
    assert props["MemoryLow"] == ("t", 32 << 20)
    assert props["MemorySwapMax"] == ("t", 64 << 20)  # memory+swap -> swap only
    assert props["CPUWeight"] == ("t", 59)
    assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert props["AllowedCPUs"] == ("ay", [0x0F, 0x01])
    assert props["AllowedMemoryNodes"] == ("ay", [0x01])
    assert props["TasksMax"] == ("t", 50)
    assert props["IOWeight"] == ("t", 4950)
    assert props["MemoryHigh"] == ("t", sdprops.INFINITY)
    assert props["MemoryMin"] == ("t", 4096)


def test_v1_properties_follow_runc():
    props = _props(LIMITS, unified=False)
    assert props["MemoryLimit"] == ("t", 64 << 20)
    assert props["CPUShares"] == ("t", 512)
    assert props["BlockIOWeight"] == ("t", 500)
    assert "MemoryMax" not in props and "AllowedCPUs" not in props


def test_quota_is_rounded_up_to_systemds_10ms_and_unlimited_is_infinity():
    assert sdprops.quota_per_sec(33333, 100000) == 340000
    assert sdprops.quota_per_sec(-1, 100000) == sdprops.INFINITY
    props = _props({"unified": {"cpu.max": "max 50000", "pids.max": "max"}})
    assert props["CPUQuotaPerSecUSec"] == ("t", sdprops.INFINITY)
    assert props["CPUQuotaPeriodUSec"] == ("t", 50000)
    assert props["TasksMax"] == ("t", sdprops.INFINITY)


def test_bad_unified_values_name_the_key():
    with pytest.raises(OcirtError, match="linux.resources.unified.memory.high: 'lots' is not"):
        _props({"unified": {"memory.high": "lots"}})
    with pytest.raises(OcirtError, match="linux.resources.cpu.cpus: invalid range '3-1'"):
        _props({"cpu": {"cpus": "3-1"}})


PROC_DEVICES = "Character devices:\n  1 mem\n 10 misc\n136 pts\n\nBlock devices:\n  8 sd\n"


def test_device_rules_as_device_allow(monkeypatch):
    monkeypatch.setattr(sdprops, "proc_devices", lambda: PROC_DEVICES)
    rules = [DeviceRule(False, "a", -1, -1, "rwm"), DeviceRule(True, "c", 1, 3, "rwm"),
             DeviceRule(True, "c", 136, -1, "rwm"), DeviceRule(True, "b", -1, -1, "m"),
             DeviceRule(True, "c", 250, -1, "r")]  # no such group: left out (runc)
    props = _props({}, rules=rules)
    assert props["DevicePolicy"] == ("s", "strict")
    assert props["DeviceAllow"] == ("a(ss)", [("/dev/char/1:3", "rwm"), ("char-pts", "rwm"),
                                              ("block-*", "m")])
    allow_all = _props({}, rules=[DeviceRule(True, "a", -1, -1, "rwm")])
    assert allow_all["DevicePolicy"] == ("s", "auto")


def test_limits_and_updates_reach_systemd(bus, fake_layout):
    """The unit starts with the limits as properties; update sends SetUnitProperties
    (runtime only) with just what changed, then writes the files."""
    (fake_layout / "memory.limit_in_bytes").write_text("")
    fake = FakeSystemd(bus)
    fake.start()
    mgr = SystemdManager("machine.slice", "libpod-abc.scope", "abc", bus=bus,
                         resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 9}})
    mgr.add(4242)
    [(_, _, props, _)] = [body for member, body in fake.calls if member == "StartTransientUnit"]
    props = dict(props)
    assert props["TasksMax"] == ("t", 9)
    assert "MemoryMax" in props or "MemoryLimit" in props
    mgr.update({"memory": {"limit": 96 << 20}})
    [sent] = [body for member, body in fake.calls if member == "SetUnitProperties"]
    assert sent[:2] == ["libpod-abc.scope", True]
    assert [name for name, _ in sent[2]] in (["MemoryMax"], ["MemoryLimit"])
    assert (fake_layout / "memory.limit_in_bytes").read_text() == str(96 << 20)
    mgr.destroy()
    assert ("ResetFailedUnit", ["libpod-abc.scope"]) in fake.calls
