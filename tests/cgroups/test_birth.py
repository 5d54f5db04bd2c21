"""The init and exec's process born inside their cgroups (cgroups.Birth, birth_from_state,
fork_in_cgroups): which directories each way covers, and the fallbacks when clone3 is
refused. No root needed: the directories are plain ones and the fork is a fake."""

from __future__ import annotations

import errno
import os

import pytest

from ocirt.cgroups import Birth, birth_from_state, fork_in_cgroups, join_from_state
from ocirt.cgroups.v1 import V1Manager
from ocirt.cgroups.v2 import V2Manager
from ocirt.errors import OcirtError
from ocirt.process.child import join_own_cgroups


def cgroup_dirs(tmp_path, *names: str) -> dict[str, str]:
    out = {}
    for name in names:
        d = tmp_path / name
        d.mkdir()
        (d / "tasks").write_text("")
        out[name] = str(d)
    return out


def test_a_hybrid_v1_manager_is_born_by_clone3_in_cgroup2_and_joins_v1_itself(tmp_path):
    d = cgroup_dirs(tmp_path, "cpu", "memory", "unified")
    mgr = V1Manager({"cpu": d["cpu"], "cpuacct": d["cpu"], "memory": d["memory"],
                     "": d["unified"]})
    birth = mgr.birth()
    try:
        assert birth.cgroup2 == d["unified"] and birth.cgroup2_fd >= 0
        assert birth.v1 == [d["cpu"], d["memory"]]  # one per directory, not per controller
        assert len(birth.tasks_fds) == 2
        os.write(birth.tasks_fds[1], b"0")  # what the intermediate writes
        assert (tmp_path / "memory" / "tasks").read_text() == "0"
    finally:
        birth.close()
    assert birth.tasks_fds == [] and birth.cgroup2_fd == -1


def test_a_v2_manager_is_born_by_clone3_alone(tmp_path):
    d = cgroup_dirs(tmp_path, "c1")
    birth = V2Manager(d["c1"]).birth()
    try:
        assert birth.cgroup2 == d["c1"] and birth.v1 == [] and birth.tasks_fds == []
    finally:
        birth.close()


def test_rootless_and_unopenable_cgroups_are_moved_by_add(tmp_path):
    d = cgroup_dirs(tmp_path, "cpu")
    assert V1Manager({"cpu": d["cpu"]}, rootless=True).birth() is None
    assert V1Manager({"cpu": str(tmp_path / "missing")}).birth() is None
    assert V1Manager({}).birth() is None


class FakeBirth(Birth):
    def __init__(self, cgroup2: str | None, v1: list[str]) -> None:  # (nothing opened)
        self.cgroup2, self.v1 = cgroup2, v1
        self.cgroup2_fd, self.tasks_fds = (7 if cgroup2 else -1), [8] * len(v1)


def refused(fd: int) -> int:
    raise OSError(errno.ENOSYS, "function not implemented")


def test_the_intermediate_is_cloned_into_cgroup2_and_joins_v1():
    calls = []
    pid, born = fork_in_cgroups(FakeBirth("/cg2/c", ["/v1/cpu/c"]),
                                clone=lambda fd: calls.append(fd) or 42, fork=lambda: 1 / 0)
    assert (pid, born, calls) == (42, ("/v1/cpu/c", "/cg2/c"), [7])


def test_a_refused_clone3_forks_and_leaves_cgroup2_to_add():
    pid, born = fork_in_cgroups(FakeBirth("/cg2/c", ["/v1/cpu/c"]), clone=refused,
                                fork=lambda: 43)
    assert (pid, born) == (43, ("/v1/cpu/c",))  # add() then writes cgroup2's cgroup.procs


def test_without_a_birth_it_is_a_plain_fork():
    assert fork_in_cgroups(None, clone=refused, fork=lambda: 44) == (44, ())
    assert fork_in_cgroups(FakeBirth(None, []), clone=refused, fork=lambda: 45) == (45, ())


def test_a_v1_join_that_fails_names_the_cgroup_and_closes_every_fd(tmp_path):
    d = cgroup_dirs(tmp_path, "cpu", "pids")

    class Ctx:
        cgroup_tasks = [(d["cpu"], os.open(os.path.join(d["cpu"], "tasks"), os.O_WRONLY)),
                        (d["pids"], os.open(os.path.join(d["pids"], "tasks"), os.O_RDONLY))]

    fds = [fd for _, fd in Ctx.cgroup_tasks]
    with pytest.raises(OcirtError, match=f"join cgroup {d['pids']}: bad file descriptor"):
        join_own_cgroups(Ctx)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert (tmp_path / "cpu" / "tasks").read_text() == "0" and Ctx.cgroup_tasks == []


def test_exec_is_born_where_the_state_says_create_was(tmp_path):
    """birth_from_state (exec, from state.json) covers what the manager's birth covered
    at create: the same cgroup2 directory and v1 directories, also inside a systemd
    unit's cgroupfs state."""
    d = cgroup_dirs(tmp_path, "cpu", "memory", "unified")
    hybrid = V1Manager({"cpu": d["cpu"], "cpuacct": d["cpu"], "memory": d["memory"],
                        "": d["unified"]})
    for state in (hybrid.state(), V2Manager(d["unified"]).state(),
                  {"manager": "systemd", "unit": "x.scope", "inner": hybrid.state()}):
        born = birth_from_state(state)
        inner = state.get("inner") or state
        made = (V1Manager if inner["manager"] == "v1" else V2Manager).from_state(inner).birth()
        try:
            assert (born.cgroup2, born.v1) == (made.cgroup2, made.v1), state
            assert len(born.tasks_fds) == len(born.v1) and born.cgroup2_fd >= 0
        finally:
            born.close()
            made.close()


def test_exec_is_moved_where_it_cannot_be_born(tmp_path):
    d = cgroup_dirs(tmp_path, "cpu")
    assert birth_from_state(None) is None
    assert birth_from_state(V1Manager({"cpu": d["cpu"]}, rootless=True).state()) is None
    assert birth_from_state(V1Manager({"cpu": str(tmp_path / "gone")}).state()) is None
    assert birth_from_state({"manager": "systemd", "unit": "x.scope", "inner": None}) is None
    assert birth_from_state({"manager": "v2", "path": ""}) is None


def test_the_move_skips_the_directories_it_was_born_in(tmp_path):
    d = cgroup_dirs(tmp_path, "cpu", "unified")
    for name in d:
        (tmp_path / name / "cgroup.procs").write_text("")
    state = V1Manager({"cpu": d["cpu"], "": d["unified"]}).state()
    join_from_state({"manager": "systemd", "unit": "x.scope", "inner": state}, 4242,
                    skip=(d["cpu"],))
    assert (tmp_path / "cpu" / "cgroup.procs").read_text() == ""
    assert (tmp_path / "unified" / "cgroup.procs").read_text() == "4242"
