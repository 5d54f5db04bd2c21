"""pause/resume, update, events, ps and kill --all on real containers."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conformance.runner import wait_for
from tests.cgroups import helpers

pytestmark = pytest.mark.root

LIMIT_FILE = helpers.by_host("memory/memory.limit_in_bytes", "memory.max")
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /cnt; sleep 0.05; done"]


def writable_root(cfg: dict) -> None:
    cfg["root"]["readonly"] = False


def counter(pid: int) -> int:
    with open(f"/proc/{pid}/root/cnt") as f:
        return int(f.read().strip() or 0)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def started(ocirt, bundle, args=None, edit=None, cid="c1") -> int:
    b = bundle(args or ["sleep", "100"], edit=edit)
    r = ocirt("run", "-d", "--bundle", b, cid)
    assert r.rc == 0, r
    return ocirt.state(cid)["pid"]


def test_pause_and_resume(ocirt, bundle):
    pid = started(ocirt, bundle, COUNTER, writable_root)
    assert wait_for(lambda: os.path.exists(f"/proc/{pid}/root/cnt") and counter(pid) > 0)
    ocirt("pause", "c1", check=True)
    assert ocirt.status("c1") == "paused"
    listed = json.loads(ocirt("list", "--format", "json", check=True).out)
    assert [c["status"] for c in listed] == ["paused"]
    freezer = helpers.controller_dir(pid, "freezer")
    if helpers.UNIFIED:
        assert "frozen 1" in helpers.read(freezer, "cgroup.events").splitlines()
    else:
        assert helpers.read(freezer, "freezer.state") == "FROZEN"
    before = counter(pid)
    time.sleep(0.4)
    assert counter(pid) == before
    r = ocirt("pause", "c1")
    assert r.rc == 1 and "container not running" in r.err, r
    ocirt("resume", "c1", check=True)
    assert ocirt.status("c1") == "running"
    assert wait_for(lambda: counter(pid) > before)
    r = ocirt("resume", "c1")
    assert r.rc == 1 and "container not paused" in r.err, r


def test_paused_container_is_killed_and_deleted(ocirt, bundle):
    name = f"ocirt-test-paused-{os.getpid()}"
    pid = started(ocirt, bundle, edit=lambda cfg: cfg["linux"].update(cgroupsPath=name))
    ocirt("pause", "c1", check=True)
    ocirt("delete", "--force", "c1", check=True)
    assert wait_for(lambda: not alive(pid))
    assert helpers.leftover_dirs(name) == []


def test_pause_a_stopped_container_is_refused(ocirt, bundle):
    ocirt("run", "--keep", "--bundle", bundle(["true"]), "c1", check=True)
    for cmd, msg in (("pause", "container not running"), ("resume", "container not paused"),
                     ("update", "container not running"), ("ps", "container not running")):
        r = ocirt(cmd, "c1")
        assert r.rc == 1 and msg in r.err, (cmd, r)
    r = ocirt("events", "--stats", "c1")
    assert r.rc == 1 and "container with id c1 is not running" in r.err, r
    r = ocirt("pause", "nosuch")
    assert r.rc == 1 and "container does not exist" in r.err, r


def test_update_with_flags_file_and_stdin(ocirt, bundle, tmp_path):
    pid = started(ocirt, bundle, edit=lambda cfg: cfg["linux"].update(
        resources={"memory": {"limit": 64 << 20}, "cpu": {"quota": 20000, "period": 100000}}))
    mem = helpers.controller_dir(pid, "memory")
    cpu = helpers.controller_dir(pid, "cpu")
    limit, swap = helpers.by_host(("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
                                  ("memory.max", "memory.swap.max"))
    ocirt("update", "--memory", "128m", "--cpu-share", "256", "--pids-limit", "30", "c1",
          check=True)
    assert helpers.read(mem, limit) == str(128 << 20)
    shares = helpers.by_host(("cpu.shares", "256"), ("cpu.weight", "35"))  # runc's conversion
    assert helpers.read(cpu, shares[0]) == shares[1]
    assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == "30"
    path = tmp_path / "resources.json"  # podman's form
    path.write_text(json.dumps({"memory": {"limit": 96 << 20, "swap": 192 << 20},
                                "cpu": {"shares": 300}}))
    ocirt("update", f"--resources={path}", "c1", check=True)
    assert helpers.read(mem, limit) == str(96 << 20)
    assert helpers.read(mem, swap) == helpers.by_host(str(192 << 20), str(96 << 20))
    ocirt("update", "--resources", "-", "c1", input='{"cpu": {"quota": 30000}}', check=True)
    if helpers.UNIFIED:
        assert helpers.read(cpu, "cpu.max") == "30000 100000"
    else:
        assert helpers.read(cpu, "cpu.cfs_quota_us") == "30000"
        assert helpers.read(cpu, "cpu.cfs_period_us") == "100000"
    r = ocirt("update", "--cpu-share", "999999999", "c1")
    if helpers.UNIFIED:  # runc's conversion caps it at the highest weight
        assert r.rc == 0 and helpers.read(cpu, "cpu.weight") == "10000", r
    else:  # the v1 kernel caps it silently; runc reads it back and refuses
        assert r.rc == 1 and "the maximum allowed cpu-shares is 262144" in r.err, r
    r = ocirt("update", "-r", "-", "c1", input="{nope")
    assert r.rc == 1 and "invalid JSON" in r.err, r
    if not helpers.UNIFIED:  # v1 refuses a limit below the usage; v2 reclaims or OOM-kills
        r = ocirt("update", "--memory", "1k", "c1")
        assert r.rc == 1 and "unable to set memory limit to 1024 (current usage:" in r.err, r


def test_update_works_on_a_paused_container(ocirt, bundle):
    pid = started(ocirt, bundle)
    ocirt("pause", "c1", check=True)
    ocirt("update", "--pids-limit", "7", "c1", check=True)
    assert helpers.read(helpers.controller_dir(pid, "pids"), "pids.max") == "7"
    assert ocirt.status("c1") == "paused"


def test_update_seen_from_inside(ocirt, bundle):
    """podman's update scenario: the new limit shows through the container's own
    /sys/fs/cgroup."""
    def edit(cfg: dict) -> None:
        writable_root(cfg)
        cfg["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup",
                              "source": "cgroup", "options": ["ro", "nosuid", "nodev"]})
        cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
        if helpers.UNIFIED:  # a cgroup2 mount shows the container's cgroup only from its
            cfg["linux"]["namespaces"].append({"type": "cgroup"})  # own namespace (runc)
    script = ("while [ ! -e /go ]; do sleep 0.05; done; "
              f"cat /sys/fs/cgroup/{LIMIT_FILE} > /out.tmp; mv /out.tmp /out; "
              "sleep 100")
    pid = started(ocirt, bundle, ["sh", "-c", script], edit)
    ocirt("update", "--memory", "128m", "c1", check=True)
    open(f"/proc/{pid}/root/go", "w").close()
    assert wait_for(lambda: os.path.exists(f"/proc/{pid}/root/out"))
    with open(f"/proc/{pid}/root/out") as f:
        assert f.read().strip() == str(128 << 20)


def test_events_stats(ocirt, bundle):
    pid = started(ocirt, bundle, edit=lambda cfg: cfg["linux"].update(
        resources={"pids": {"limit": 40}, "memory": {"limit": 64 << 20}}))
    r = ocirt("events", "--stats", "c1", check=True)
    lines = r.out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "stats" and event["id"] == "c1"
    data = event["data"]
    assert data["pids"] == {"current": 1, "limit": 40}
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["usage"]["usage"] > 0
    assert helpers.by_host("total_rss", "anon") in data["memory"]["raw"], data["memory"]
    assert data["cpu"]["usage"]["total"] > 0
    assert set(data) >= {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb"}
    assert pid > 0


def test_events_stream_until_the_container_stops(ocirt, bundle):
    started(ocirt, bundle, ["sleep", "4"])  # long enough for a slow (emulated) host
    r = ocirt("events", "--interval", "300ms", "c1", timeout=20)
    assert r.rc == 0, r
    events = [json.loads(line) for line in r.out.splitlines()]
    assert len(events) >= 2
    assert {e["type"] for e in events} == {"stats"}
    r = ocirt("events", "--interval", "0s", "c1")
    assert r.rc == 1


def test_events_report_oom_kills(ocirt, bundle):
    # The OOM comes after `events` watches: its first stats line is written after the
    # watch is set up, and only then an exec fills the memory (on a slow, emulated host
    # `events` takes seconds to start, and a kill before it watches is not an event).
    started(ocirt, bundle, ["sleep", "100"], edit=lambda cfg: cfg["linux"].update(
        resources={"memory": {"limit": 16 << 20, "swap": 16 << 20}}))
    proc = subprocess.Popen(ocirt.cmd("events", "--interval", "1s", "c1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        seen.append(json.loads(proc.stdout.readline()))
        assert seen[0]["type"] == "stats", (seen, proc.stderr.read())
        r = ocirt("exec", "c1", "tail", "/dev/zero", timeout=120)
        assert r.rc == 137, r  # the exec is OOM-killed, pid 1 lives
        deadline = time.monotonic() + 30
        while seen[-1]["type"] != "oom" and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(json.loads(line))
    finally:
        ocirt("kill", "c1", "KILL")
        proc.wait(timeout=30)
    assert {"type": "oom", "id": "c1"} in seen, ([e["type"] for e in seen],
                                                 proc.stderr.read())
    assert seen.count({"type": "oom", "id": "c1"}) == 1, [e["type"] for e in seen]


def test_ps_json_and_table(ocirt, bundle):
    pid = started(ocirt, bundle, ["sh", "-c", "sleep 100 & sleep 200 & wait"])
    assert wait_for(lambda: len(json.loads(ocirt("ps", "--format", "json", "c1").out)) == 3)
    pids = json.loads(ocirt("ps", "--format", "json", "c1", check=True).out)
    assert pid in pids
    table = ocirt("ps", "c1", check=True).out.splitlines()
    assert table[0].split()[:2] == ["UID", "PID"]
    assert sorted(int(line.split()[1]) for line in table[1:]) == sorted(pids)
    custom = ocirt("ps", "c1", "-o", "pid,args", check=True).out.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert any("sleep 200" in line for line in custom[1:])
    r = ocirt("ps", "--format", "yaml", "c1")
    assert r.rc == 1 and "invalid format option" in r.err


def test_kill_all_without_a_pid_namespace(ocirt, bundle):
    """Without its own pid namespace only the cgroup knows every process."""
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"]
                                      if ns["type"] != "pid"]
    pid = started(ocirt, bundle, ["sh", "-c", "sleep 300 & sleep 301 & wait"], edit)
    procs = helpers.controller_dir(pid, "pids")
    assert wait_for(lambda: len(helpers.read(procs, "cgroup.procs").split()) == 3)
    members = [int(p) for p in helpers.read(procs, "cgroup.procs").split()]
    ocirt("kill", "--all", "c1", "KILL", check=True)
    assert wait_for(lambda: not any(alive(p) for p in members))
    ocirt("delete", "c1", check=True)
