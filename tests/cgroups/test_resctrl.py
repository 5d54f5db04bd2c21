"""linux.intelRdt (runtime-spec 1.3: schemata, enableMonitoring, the "/" group).

This VM has no resctrl, so the error path runs for real: `create` fails before anything
exists, and so does `update --l3-cache-schema`. The write logic runs against a fake
resctrl tree (tests/cgroups/fake_resctrl.py fakes only kernfs's mkdir/rmdir and the
mount point): first ocirt.resctrl's functions alone, then whole containers created,
exec'd into, updated and deleted by the real CLI with the fake installed.
"""

from __future__ import annotations

import os
import sys

import pytest

from conformance.runner import Runtime, wait_for
from ocirt import resctrl
from ocirt.errors import OcirtError
from ocirt.spec.plan import IntelRdt, _intel_rdt
from tests.cgroups import fake_resctrl
from tests.conftest import REPO
from tests.leaks import assert_nothing_left


def have_resctrl() -> bool:
    try:
        resctrl.find_root()
    except OcirtError:
        return False
    return True


def rdt(**conf) -> IntelRdt:
    parsed = _intel_rdt({"intelRdt": conf})
    assert parsed is not None
    return parsed


# --- the plan ------------------------------------------------------------------------

def test_plan_orders_the_schemata_lines_l3_mb_then_schemata():
    r = rdt(closID="gold", l3CacheSchema="L3:0=f0", memBwSchema="MB:0=20",
            schemata=["L2:0=f", "MB:0=30"], enableMonitoring=True)
    assert (r.clos_id, r.schemata, r.l3_cache, r.mem_bw, r.monitoring) == (
        "gold", ["L3:0=f0", "MB:0=20", "L2:0=f", "MB:0=30"], True, True, True)


@pytest.mark.parametrize("conf, message", [
    ({"closID": ".."}, "linux.intelRdt.closID: invalid CLOS ID '..'"),
    ({"closID": "a/b"}, "linux.intelRdt.closID: invalid CLOS ID 'a/b'"),
    ({"memBwSchema": "L3:0=f"}, "linux.intelRdt.memBwSchema: 'L3:0=f' must start with"),
    ({"l3CacheSchema": "L3:0=f\nMB:0=1"}, "linux.intelRdt.l3CacheSchema: must be a single"),
    ({"schemata": ["L3:0=f", "L2:0=f\nMB:0=1"]},
     "linux.intelRdt.schemata[1]: must be a single line"),
    ({"schemata": "L3:0=f"}, "linux.intelRdt.schemata: must be an array"),
    ({"enableMonitoring": "yes"}, "linux.intelRdt.enableMonitoring: must be a boolean"),
])
def test_plan_errors_name_the_field(conf, message):
    with pytest.raises(OcirtError, match="^" + message.replace("[", r"\[").replace(".", r"\.")):
        _intel_rdt({"intelRdt": conf})


# --- ocirt.resctrl against the fake tree ----------------------------------------------

@pytest.fixture
def fake(tmp_path, monkeypatch):
    root = fake_resctrl.make_root(str(tmp_path / "resctrl"))
    monkeypatch.setattr(resctrl, "_mkdir", fake_resctrl.fake_mkdir)
    monkeypatch.setattr(resctrl, "_rmdir", fake_resctrl.fake_rmdir)
    return root


def test_a_group_named_after_the_container_is_made_written_joined_and_removed(fake):
    r = rdt(schemata=["L3:0=f", "MB:0=50"], enableMonitoring=True)
    resctrl.check(r, fake, "c1")
    rec = resctrl.record(r, fake, "c1")
    group = os.path.join(fake, "c1")
    assert rec == {"root": fake, "path": group, "remove": True,
                   "mon": os.path.join(group, "mon_groups", "c1")}
    resctrl.apply(r, rec, 4242)
    assert fake_resctrl.lines(os.path.join(group, "schemata")) == ["L3:0=f", "MB:0=50"]
    assert fake_resctrl.lines(os.path.join(group, "tasks")) == ["4242"]
    assert fake_resctrl.lines(os.path.join(rec["mon"], "tasks")) == ["4242"]
    resctrl.join(rec, 4343)  # an exec'd process
    assert fake_resctrl.lines(os.path.join(group, "tasks")) == ["4242", "4343"]
    assert fake_resctrl.lines(os.path.join(rec["mon"], "tasks")) == ["4242", "4343"]
    assert fake_resctrl.lines(os.path.join(fake, "tasks")) == []  # the root group: untouched
    resctrl.destroy(rec)
    assert not os.path.exists(group)
    resctrl.destroy(rec)  # twice (delete --force after a failed delete): no error


def test_a_named_clos_is_made_when_missing_and_never_removed(fake):
    r = rdt(closID="gold", l3CacheSchema="L3:0=f0", enableMonitoring=True)
    rec = resctrl.record(r, fake, "c1")
    assert rec["remove"] is False and rec["path"] == os.path.join(fake, "gold")
    resctrl.apply(r, rec, 7)
    assert fake_resctrl.lines(os.path.join(fake, "gold", "schemata")) == ["L3:0=f0"]
    resctrl.destroy(rec)
    # The CLOS stays for the other containers in it; the container's MON group goes.
    assert os.path.isdir(os.path.join(fake, "gold"))
    assert os.listdir(os.path.join(fake, "gold", "mon_groups")) == []


def test_the_slash_clos_is_the_root_group(fake):
    r = rdt(closID="/")
    rec = resctrl.record(r, fake, "c1")
    assert rec["path"] == fake and rec["remove"] is False
    resctrl.apply(r, rec, 9)
    assert fake_resctrl.lines(os.path.join(fake, "tasks")) == ["9"]
    assert fake_resctrl.lines(os.path.join(fake, "schemata")) == []  # nothing to write
    resctrl.destroy(rec)
    assert os.path.isdir(fake)


def test_a_preconfigured_clos_without_schemata_must_exist(fake):
    with pytest.raises(OcirtError, match=r"^linux\.intelRdt\.closID: resctrl group .*/gold "
                                         r"does not exist \(it must be made beforehand"):
        resctrl.check(rdt(closID="gold"), fake, "c1")
    os.mkdir(os.path.join(fake, "gold"))
    resctrl.check(rdt(closID="gold"), fake, "c1")


@pytest.mark.parametrize("missing, conf, message", [
    ({"cat": False}, {"l3CacheSchema": "L3:0=f"},
     r"linux\.intelRdt\.l3CacheSchema: Intel RDT/CAT is not enabled"),
    ({"mba": False}, {"memBwSchema": "MB:0=20"},
     r"linux\.intelRdt\.memBwSchema: Intel RDT/MBA is not enabled"),
    ({"mon": False}, {"enableMonitoring": True},
     r"linux\.intelRdt\.enableMonitoring: resctrl monitoring is not enabled"),
])
def test_what_the_hardware_lacks_is_refused_by_field(tmp_path, missing, conf, message):
    root = fake_resctrl.make_root(str(tmp_path / "r"), **missing)
    with pytest.raises(OcirtError, match="^" + message):
        resctrl.check(rdt(**conf), root, "c1")


@pytest.mark.parametrize("conf, cid", [({"closID": "info"}, "c1"), ({}, "mon_groups")])
def test_resctrl_own_files_are_not_groups(fake, conf, cid):
    with pytest.raises(OcirtError, match=r"^linux\.intelRdt\.closID.*is a file of resctrl"):
        resctrl.record(rdt(**conf), fake, cid)


def test_a_refused_write_carries_the_kernel_status(fake):
    with open(os.path.join(fake, "info", "last_cmd_status"), "w") as f:
        f.write("Unknown or unsupported resource name 'L9'\n")
    rec = resctrl.record(rdt(schemata=["L9:0=1"]), fake, "c1")
    os.mkdir(rec["path"])  # a group without a schemata file: the write fails (ENOENT)
    with pytest.raises(OcirtError, match=r"^linux\.intelRdt: write 'L9:0=1' to .*/c1/schemata"
                                         r": no such file or directory \(last_cmd_status: "
                                         r"Unknown or unsupported resource name 'L9'\)$"):
        resctrl.apply(rdt(schemata=["L9:0=1"]), rec, 1)


# --- containers, on this host (no resctrl) ---------------------------------------------

RDT = {"closID": "", "schemata": ["L3:0=f"], "enableMonitoring": True}


@pytest.mark.root
@pytest.mark.skipif(have_resctrl(), reason="this host has resctrl mounted")
def test_without_resctrl_create_fails_before_anything_exists(ocirt, bundle, state_root):
    b = bundle(["true"], edit=lambda cfg: cfg["linux"].update(intelRdt=RDT))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert ("linux.intelRdt: Intel RDT is not enabled: this kernel or CPU has no resctrl "
            "(/sys/fs/resctrl does not exist)\"") in r.err, r
    assert len(r.err.strip().splitlines()) == 1
    assert_nothing_left(state_root, "c1", b)


@pytest.mark.root
@pytest.mark.skipif(have_resctrl(), reason="this host has resctrl mounted")
def test_without_resctrl_update_schema_is_runc_s_error(ocirt, bundle):
    assert ocirt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "c1").rc == 0
    for flag, message in (("--l3-cache-schema", "Intel RDT/CAT: l3 cache schema is not enabled"),
                          ("--mem-bw-schema", "Intel RDT/MBA: memory bandwidth schema is not "
                                              "enabled")):
        r = ocirt("update", flag, "L3:0=f" if "l3" in flag else "MB:0=20", "c1")
        assert r.rc == 1, r
        assert message in r.err
    assert ocirt.status("c1") == "running"


# --- containers, with the fake resctrl ---------------------------------------------------

@pytest.fixture
def fake_ocirt(tmp_path, state_root):
    """The real CLI with the fake resctrl at tmp/resctrl (see fake_resctrl.py)."""
    root = fake_resctrl.make_root(str(tmp_path / "resctrl"))
    script = tmp_path / "ocirt-fake-resctrl"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m "
                      f"tests.cgroups.fake_resctrl {root} \"$@\"\n")
    script.chmod(0o755)
    rt = Runtime(str(script), state_root)
    yield rt, root
    rt.cleanup()
    assert not rt.ids()


def _group_pids(path):
    return [int(p) for p in fake_resctrl.lines(os.path.join(path, "tasks"))]


@pytest.mark.root
def test_container_joins_its_group_exec_too_and_delete_removes_it(fake_ocirt, bundle,
                                                                   state_root):
    rt, root = fake_ocirt
    b = bundle(["sleep", "1000"], edit=lambda cfg: cfg["linux"].update(intelRdt=RDT))
    r = rt("run", "-d", "--bundle", b, "c1")
    assert r.rc == 0, r
    pid = rt.state("c1")["pid"]
    group = os.path.join(root, "c1")
    assert fake_resctrl.lines(os.path.join(group, "schemata")) == ["L3:0=f"]
    assert _group_pids(group) == [pid]
    assert _group_pids(os.path.join(group, "mon_groups", "c1")) == [pid]
    r = rt("exec", "c1", "sh", "-c", "echo $$")
    assert r.rc == 0, r
    # The exec'd process is no child of the init, so it must be written in itself.
    pids = _group_pids(group)
    assert len(pids) == 2 and pids[0] == pid and pids[1] != pid
    r = rt("update", "--l3-cache-schema", "L3:0=3", "--mem-bw-schema", "MB:0=40", "c1")
    assert r.rc == 0, r
    assert fake_resctrl.lines(os.path.join(group, "schemata")) == [
        "L3:0=f", "L3:0=3", "MB:0=40", "L3:0=f"]  # the config's schemata go last (runc)
    assert rt("delete", "--force", "c1").rc == 0
    assert not os.path.exists(group)
    assert _group_pids(root) == []
    assert_nothing_left(state_root, "c1", b)


@pytest.mark.root
def test_update_schema_without_intel_rdt_makes_a_group(fake_ocirt, bundle):
    rt, root = fake_ocirt
    assert rt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "c1").rc == 0
    pid = rt.state("c1")["pid"]
    assert not os.path.exists(os.path.join(root, "c1"))
    r = rt("update", "--mem-bw-schema", "MB:0=30", "c1")
    assert r.rc == 0, r
    assert fake_resctrl.lines(os.path.join(root, "c1", "schemata")) == ["MB:0=30"]
    assert _group_pids(os.path.join(root, "c1")) == [pid]
    assert rt("delete", "--force", "c1").rc == 0
    assert not os.path.exists(os.path.join(root, "c1"))


@pytest.mark.root
def test_sigkilled_create_leaves_a_group_delete_force_removes(fake_ocirt, bundle, state_root):
    """The record is in the state before the group is made: `delete --force` after a
    create killed in the middle still finds and removes it."""
    rt, root = fake_ocirt
    # createRuntime hook runs after the group is made: it SIGKILLs the create.
    kill = {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}

    def edit(cfg):
        cfg["linux"].update(intelRdt=RDT)
        cfg["hooks"] = {"createRuntime": [kill]}
    b = bundle(["sleep", "1000"], edit=edit)
    r = rt("create", "--bundle", b, "c1")
    assert r.rc == -9, r
    assert os.path.isdir(os.path.join(root, "c1"))
    assert wait_for(lambda: rt.status("c1") == "stopped", 5)
    assert rt("delete", "--force", "c1").rc == 0
    assert not os.path.exists(os.path.join(root, "c1"))
    assert_nothing_left(state_root, "c1", b)
