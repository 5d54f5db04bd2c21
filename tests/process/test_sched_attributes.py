"""process.ioPriority, process.scheduler, linux.personality and process.execCPUAffinity
in real containers: what the process inside sees (busybox `ionice`, /proc/self/stat,
`uname -m`, /proc/self/status) and what the host sees of the same PID (ioprio_get through
util-linux `ionice -p`, sched_getscheduler/getpriority, `chrt -p`,
/proc/<pid>/personality, sched_getaffinity), for the init, for `exec` (which takes the
container's values) and for `exec --process` (whose own values win, as in runc's
tests/integration/{ioprio,scheduler,personality,cpu_affinity}.bats).

runc 1.1 (Debian 12's) has none of these four, so there is no side-by-side run; the
expectations are runc 1.2+'s. Bad values are one-line errors naming the field (rc 1).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

import pytest

from conformance.runner import wait_for
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

STAT = ["cat", "/proc/self/stat"]


def stat_fields(text: str) -> dict[str, int]:
    """nice, rt_priority and policy from a /proc/<pid>/stat line (fields 19, 40, 41)."""
    rest = text.rsplit(")", 1)[1].split()  # rest[0] is field 3
    return {"nice": int(rest[16]), "rt_priority": int(rest[37]), "policy": int(rest[38])}


def started(ocirt, cid: str) -> int:
    """The PID of the container's process once it runs busybox (it has exec'd)."""
    pid = ocirt.state(cid)["pid"]
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe").endswith("busybox"), 5)
    return pid


def process_file(tmp_path, name: str, **fields) -> str:
    doc = {"terminal": False, "cwd": "/", "args": ["sleep", "1000"],
           "env": ["PATH=/bin"], **fields}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def exec_detached(ocirt, tmp_path, cid: str, proc_file: str) -> int:
    pid_file = tmp_path / f"{os.path.basename(proc_file)}.pid"
    r = ocirt("exec", "-d", "--pid-file", str(pid_file), "--process", proc_file, cid)
    assert r.rc == 0, r
    pid = int(pid_file.read_text())
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe").endswith("busybox"), 5)
    return pid


def host_ionice(pid: int) -> str:
    return subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True,
                          check=True).stdout.strip()


def bad_config(ocirt, bundle, state_root, edit, message: str) -> None:
    b = bundle(["true"], edit=edit)
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert message in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert_nothing_left(state_root, "c1", b)


# --- ioPriority ------------------------------------------------------------------------

def test_io_priority_of_the_init_exec_and_process_file(ocirt, bundle, tmp_path):
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["process"].update(
        ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4}))
    assert ocirt("run", "-d", "--bundle", b, "c1").rc == 0
    pid = started(ocirt, "c1")
    assert host_ionice(pid) == "best-effort: prio 4"
    r = ocirt("exec", "c1", "ionice", "-p", "1")  # the init, seen from inside
    assert (r.rc, r.out.strip()) == (0, "best-effort: prio 4"), r
    r = ocirt("exec", "c1", "ionice")  # exec takes config.json's
    assert (r.rc, r.out.strip()) == (0, "best-effort: prio 4"), r
    idle = exec_detached(ocirt, tmp_path, "c1", process_file(
        tmp_path, "idle.json", ioPriority={"class": "IOPRIO_CLASS_IDLE"}))
    assert host_ionice(idle) == "idle"
    # A process.json without ioPriority falls back to config.json's (runc's
    # newInitConfig), as a plain `exec` does.
    plain = exec_detached(ocirt, tmp_path, "c1", process_file(tmp_path, "plain.json"))
    assert host_ionice(plain) == "best-effort: prio 4"


def test_without_io_priority_the_process_keeps_the_default(ocirt, bundle):
    r = ocirt("run", "--bundle", bundle(["ionice"]), "c1")
    assert (r.rc, r.out.strip()) == (0, "none: prio 0"), r


@pytest.mark.parametrize("prio, message", [
    ({"class": "IOPRIO_CLASS_FOO"},
     "process.ioPriority.class: invalid io priority class 'IOPRIO_CLASS_FOO'"),
    ({"class": "IOPRIO_CLASS_BE", "priority": 8},
     "process.ioPriority.priority: 8 is outside [0, 7]"),
    ({"class": "IOPRIO_CLASS_BE", "priority": "4"},
     "process.ioPriority.priority: must be an integer"),
])
def test_bad_io_priority_is_a_one_line_error(ocirt, bundle, state_root, prio, message):
    bad_config(ocirt, bundle, state_root,
               lambda cfg: cfg["process"].update(ioPriority=prio), message)


# --- scheduler -------------------------------------------------------------------------

def test_scheduler_of_the_init_and_of_exec(ocirt, bundle):
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["process"].update(
        scheduler={"policy": "SCHED_BATCH", "nice": 19}))
    assert ocirt("run", "-d", "--bundle", b, "c1").rc == 0
    pid = started(ocirt, "c1")
    assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    r = ocirt("exec", "c1", "cat", "/proc/1/stat")
    assert r.rc == 0, r
    assert stat_fields(r.out) == {"nice": 19, "rt_priority": 0, "policy": 3}
    r = ocirt("exec", "c1", *STAT)  # exec takes config.json's
    assert r.rc == 0, r
    assert stat_fields(r.out) == {"nice": 19, "rt_priority": 0, "policy": 3}
    # The runtime itself was never under it.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_idle_policy_and_process_file_override(ocirt, bundle, tmp_path):
    r = ocirt("run", "--bundle", bundle(STAT, edit=lambda cfg: cfg["process"].update(
        scheduler={"policy": "SCHED_IDLE"})), "c1")
    assert r.rc == 0, r
    assert stat_fields(r.out)["policy"] == os.SCHED_IDLE
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["process"].update(
        scheduler={"policy": "SCHED_BATCH", "nice": 7}))
    assert ocirt("run", "-d", "--bundle", b, "c2").rc == 0
    # runc's scheduler.bats: a process.json's SCHED_DEADLINE (reset-on-fork: a deadline
    # task may not fork otherwise), read back by the host's chrt.
    pid = exec_detached(ocirt, tmp_path, "c2", process_file(
        tmp_path, "dl.json", scheduler={
            "policy": "SCHED_DEADLINE", "flags": ["SCHED_FLAG_RESET_ON_FORK"],
            "runtime": 42000, "deadline": 100000, "period": 1000000}))
    out = subprocess.run(["chrt", "-p", str(pid)], capture_output=True, text=True,
                         check=True).stdout
    assert "scheduling policy: SCHED_DEADLINE|SCHED_RESET_ON_FORK" in out, out
    assert "runtime/deadline/period parameters: 42000/100000/1000000" in out, out
    plain = exec_detached(ocirt, tmp_path, "c2", process_file(tmp_path, "plain.json"))
    assert os.sched_getscheduler(plain) == os.SCHED_BATCH  # config.json's, as in runc
    assert os.getpriority(os.PRIO_PROCESS, plain) == 7


def test_real_time_policy(ocirt, bundle):
    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
        if os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
            # v1 with CONFIG_RT_GROUP_SCHED: a new cpu cgroup has no real-time budget,
            # so the kernel refuses SCHED_FIFO (EPERM) unless the container gets one.
            cfg["linux"].setdefault("resources", {})["cpu"] = {
                "realtimeRuntime": 10000, "realtimePeriod": 1000000}

    r = ocirt("run", "--bundle", bundle(STAT, edit=edit), "c1")
    assert r.rc == 0, r
    assert stat_fields(r.out) == {"nice": 0, "rt_priority": 10, "policy": os.SCHED_FIFO}


@pytest.mark.parametrize("sched, message", [
    ({"nice": 1}, "process.scheduler.policy: invalid scheduler policy ''"),
    ({"policy": "SCHED_FOO"}, "process.scheduler.policy: invalid scheduler policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice: 20 is outside [-20, 19]"),
    ({"policy": "SCHED_BATCH", "priority": 3},
     "process.scheduler.priority: can only be set for SCHED_FIFO or SCHED_RR"),
    ({"policy": "SCHED_RR"}, "process.scheduler.priority: must be in [1, 99] for SCHED_RR"),
    ({"policy": "SCHED_OTHER", "runtime": 1000},
     "process.scheduler.runtime: can only be set for SCHED_DEADLINE"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_BOGUS"]},
     "process.scheduler.flags[0]: invalid scheduler flag 'SCHED_FLAG_BOGUS'"),
])
def test_bad_scheduler_is_a_one_line_error(ocirt, bundle, state_root, sched, message):
    bad_config(ocirt, bundle, state_root,
               lambda cfg: cfg["process"].update(scheduler=sched), message)


def test_scheduler_the_kernel_refuses_fails_create(ocirt, bundle, state_root):
    # SCHED_ISO is in the spec but no mainline kernel has it: sched_setattr says EINVAL.
    b = bundle(["true"], edit=lambda cfg: cfg["process"].update(
        scheduler={"policy": "SCHED_ISO"}))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert "error setting scheduler: invalid argument" in r.err, r
    assert "Traceback" not in r.err
    assert_nothing_left(state_root, "c1", b)


RT_GROUPS = os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us")


@pytest.mark.skipif(not RT_GROUPS, reason="needs cgroup v1 with real-time group scheduling")
def test_real_time_policy_without_a_budget_names_the_fix(ocirt, bundle, state_root):
    b = bundle(["true"], edit=lambda cfg: cfg["process"].update(
        scheduler={"policy": "SCHED_FIFO", "priority": 10}))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert "error setting scheduler: operation not permitted" in r.err, r
    assert "linux.resources.cpu.realtimeRuntime" in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert_nothing_left(state_root, "c1", b)


# --- personality -----------------------------------------------------------------------

X86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                            reason="LINUX32 reads as i686 only on x86_64")


@X86_64
def test_linux32_personality_for_the_init_and_exec(ocirt, bundle):
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["linux"].update(
        personality={"domain": "LINUX32"}))
    assert ocirt("run", "-d", "--bundle", b, "c1").rc == 0
    pid = started(ocirt, "c1")
    with open(f"/proc/{pid}/personality") as f:
        assert int(f.read(), 16) == 0x0008  # PER_LINUX32
    r = ocirt("exec", "c1", "uname", "-m")
    assert (r.rc, r.out.strip()) == (0, "i686"), r
    assert platform.machine() == "x86_64"  # ours is untouched


@X86_64
def test_linux_personality_flags_are_warned_and_ignored(ocirt, bundle):
    r = ocirt("run", "--bundle", bundle(["uname", "-m"], edit=lambda cfg: cfg["linux"].update(
        personality={"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]})), "c1")
    assert (r.rc, r.out.strip()) == (0, "x86_64"), r
    assert "linux.personality.flags" in r.err and "ignored" in r.err, r


@X86_64
def test_personality_is_set_before_seccomp(ocirt, bundle):
    # runc's personality.bats: a filter that denies personality(2) does not stop it.
    def edit(cfg):
        cfg["linux"]["personality"] = {"domain": "LINUX32"}
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO"}]}

    r = ocirt("run", "--bundle", bundle(["uname", "-m"], edit=edit), "c1")
    assert (r.rc, r.out.strip()) == (0, "i686"), r


def test_bad_personality_is_a_one_line_error(ocirt, bundle, state_root):
    bad_config(ocirt, bundle, state_root,
               lambda cfg: cfg["linux"].update(personality={"domain": "LINUX64"}),
               "linux.personality.domain: invalid domain 'LINUX64'")


# --- execCPUAffinity -------------------------------------------------------------------

def online_cpus() -> set[int]:
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def allowed_list(status: str) -> str:
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(f"no Cpus_allowed_list in {status!r}")


def cpu_list(cpus: set[int]) -> str:
    lo, hi = min(cpus), max(cpus)
    assert cpus == set(range(lo, hi + 1)), cpus
    return str(lo) if lo == hi else f"{lo}-{hi}"


SMP = pytest.mark.skipif(len(online_cpus()) < 2, reason="needs two online CPUs")


def pinned(ocirt, cpu: int, *args: str):
    """`taskset -c cpu ocirt ...`: the runtime runs on one CPU only."""
    argv = ["taskset", "-c", str(cpu), *ocirt.cmd(*args)]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)


@SMP
def test_the_init_ignores_exec_cpu_affinity_and_the_runtimes_cpus(ocirt, bundle):
    # runtime-spec: execCPUAffinity "is not applicable to the container's init
    # process"; runc resets the init to every CPU (cpu_affinity.bats "should reset").
    first = min(online_cpus())
    b = bundle(["grep", "Cpus_allowed_list", "/proc/self/status"],
               edit=lambda cfg: cfg["process"].update(
                   execCPUAffinity={"initial": str(first), "final": str(first)}))
    r = pinned(ocirt, first, "run", "--bundle", b, "c1")
    assert r.returncode == 0, r
    assert allowed_list(r.stdout) == cpu_list(online_cpus()), r.stdout


@SMP
def test_exec_cpu_affinity_final_and_reset(ocirt, bundle, tmp_path):
    first, second = sorted(online_cpus())[:2]
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["process"].update(
        execCPUAffinity={"initial": str(first), "final": str(second)}))
    assert ocirt("run", "-d", "--bundle", b, "c1").rc == 0
    init = started(ocirt, "c1")
    assert os.sched_getaffinity(init) == online_cpus()
    r = pinned(ocirt, first, "exec", "c1", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert r.returncode == 0, r
    assert allowed_list(r.stdout) == str(second), r.stdout  # config.json's final
    pid = exec_detached(ocirt, tmp_path, "c1", process_file(
        tmp_path, "final.json", execCPUAffinity={"final": f"{first}-{second}"}))
    assert os.sched_getaffinity(pid) == {first, second}
    # Without any execCPUAffinity an exec'd process gets every CPU, not the CPUs of the
    # runtime that ran it (runc's "default CPU affinity should reset").
    b2 = bundle(["sleep", "1000"])
    assert ocirt("run", "-d", "--bundle", b2, "c2").rc == 0
    r = pinned(ocirt, first, "exec", "c2", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert r.returncode == 0, r
    assert allowed_list(r.stdout) == cpu_list(online_cpus()), r.stdout


@SMP
def test_exec_cpu_affinity_final_within_the_cpuset(ocirt, bundle):
    # The final CPUs are set after the move into the container's cgroup, so the cpuset
    # (here: every online CPU, written explicitly) does not undo them.
    first, second = sorted(online_cpus())[:2]

    def edit(cfg):
        cfg["process"]["execCPUAffinity"] = {"final": str(second)}
        cfg["linux"]["resources"] = {"cpu": {"cpus": cpu_list(online_cpus()), "mems": "0"}}

    assert ocirt("run", "-d", "--bundle", bundle(["sleep", "1000"], edit=edit), "c1").rc == 0
    r = ocirt("exec", "c1", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert r.rc == 0, r
    assert allowed_list(r.out) == str(second), r


@SMP
def test_deadline_with_fewer_cpus_is_refused_with_runcs_message(ocirt, bundle, state_root):
    # runc's scheduler.bats "scheduler vs cpus": SCHED_DEADLINE needs every CPU of the
    # root domain, so sched_setattr says EPERM in a cpuset of one CPU.
    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_DEADLINE", "runtime": 42000,
                                       "deadline": 1000000, "period": 1000000}
        cfg["linux"]["resources"] = {"cpu": {"cpus": str(min(online_cpus())), "mems": "0"}}

    b = bundle(["true"], edit=edit)
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert "process scheduler can't be used together with AllowedCPUs" in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert_nothing_left(state_root, "c1", b)


@pytest.mark.parametrize("aff, message", [
    ({"initial": "0-x"}, "process.execCPUAffinity.initial"),
    ({"final": "3-1"}, "process.execCPUAffinity.final"),
    ({"final": 1}, "process.execCPUAffinity.final: must be a string"),
])
def test_bad_exec_cpu_affinity_is_a_one_line_error(ocirt, bundle, state_root, aff, message):
    bad_config(ocirt, bundle, state_root,
               lambda cfg: cfg["process"].update(execCPUAffinity=aff), message)


def test_exec_cpu_affinity_the_kernel_refuses_fails_exec(ocirt, bundle, tmp_path):
    # CPU 4000 is within the parser's limit but never online here: sched_setaffinity
    # says EINVAL; exec fails with runc's 255 and one line naming the field.
    assert ocirt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "c1").rc == 0
    r = ocirt("exec", "--process", process_file(
        tmp_path, "bad.json", args=["true"], execCPUAffinity={"final": "4000"}), "c1")
    assert r.rc == 255, r
    assert "process.execCPUAffinity.final: error setting CPU affinity '4000'" in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert ocirt("exec", "c1", "true").rc == 0  # the container is unharmed
