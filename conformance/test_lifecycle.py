"""Lifecycle and state: create, start, state, and the transitions the spec allows and forbids.

Every case starts real busybox containers; "from the host" means /proc/<pid> of the
container process as the suite sees it, "from inside" means what the process prints.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
MARK = "conformance-user-program-ran"


def _marker_bundle(h, **kw):
    """A bundle whose program announces itself, then waits to be killed."""
    return h.bundle(["sh", "-c", f"echo {MARK}; exec sleep 1000"], **kw)


@case("LC-01", "runtime.md#lifecycle step 2", "MUST")
def test_create_does_not_run_program(h):
    """create builds the container but does not run process.args"""
    c = h.create(_marker_bundle(h))
    time.sleep(0.3)
    assert c.status() == "created"
    assert MARK not in c.output(), "the user program ran during create"
    assert procfs.cmdline(c.pid)[:1] != ["sleep"], "the init already exec'd the program"


@case("LC-02", "runtime.md#state", "MUST")
def test_state_fields_created(h):
    """state of a created container has ociVersion, id, status, pid and absolute bundle"""
    b = h.bundle(["sleep", "100"])
    c = h.create(b)
    st = c.state()
    assert isinstance(st.get("ociVersion"), str) and SEMVER.match(st["ociVersion"]), st
    assert st.get("id") == c.cid
    assert st.get("status") == "created"
    assert isinstance(st.get("pid"), int) and st["pid"] == c.pid > 0
    assert st.get("bundle") == b and os.path.isabs(st["bundle"])


@case("LC-03", "runtime.md#state", "MUST")
def test_state_pid_is_container_process(h):
    """the state pid is the container process: it lives in the container's namespaces"""
    c = h.create(h.bundle(["sleep", "100"]))
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        assert procfs.ns(c.pid, kind) != procfs.ns("self", kind), kind
    with open(f"/proc/{c.pid}/root/etc/passwd") as f:
        assert "user:x:1000" in f.read(), "the pid's root is not the bundle rootfs"


@case("LC-04", "runtime.md#start", "MUST")
def test_start_runs_program(h):
    """start runs process.args: status running, the pid execs the program"""
    c = h.create(_marker_bundle(h))
    c.start()
    c.wait_output(MARK)
    assert c.status() == "running"
    assert c.state()["pid"] == c.pid
    assert wait_for(lambda: procfs.cmdline(c.pid) == ["sleep", "1000"], 5), \
        procfs.cmdline(c.pid)


@case("LC-05", "runtime.md#state", "MUST")
def test_exit_means_stopped(h):
    """when the container process exits the state becomes stopped"""
    c = h.create(h.bundle(["true"]))
    c.start()
    c.wait_stopped()
    assert c.state()["id"] == c.cid
    assert procfs.wait_gone(c.pid, 5)


@case("LC-06", "runtime.md#start", "MUST")
def test_start_running_fails(h):
    """start on a running container fails and leaves it running"""
    c = h.create(h.bundle(["sleep", "100"]))
    c.start()
    r = c.start(check=False)
    assert r.rc != 0
    assert c.status() == "running" and procfs.alive(c.pid)
    assert procfs.cmdline(c.pid) == ["sleep", "100"]


@case("LC-07", "runtime.md#start", "MUST")
def test_start_stopped_fails(h):
    """start on a stopped container fails and it stays stopped"""
    c = h.create(h.bundle(["true"]))
    c.start()
    c.wait_stopped()
    assert c.start(check=False).rc != 0
    assert c.status() == "stopped"


@case("LC-08", "runtime.md#start", "MUST")
def test_start_unknown_fails(h):
    """start of an unknown container fails"""
    assert h.rt("start", h.cid()).rc != 0


@case("LC-09", "runtime.md#query-state", "MUST")
def test_state_unknown_fails(h):
    """state of an unknown container fails"""
    r = h.rt("state", h.cid())
    assert r.rc != 0
    assert not r.out.strip().startswith("{"), r


@pytest.mark.parametrize("command", ["state", "start", "kill", "delete"])
@case("LC-10", "runtime.md#operations", "MUST")
def test_operation_without_id_fails(h, command):
    """each operation fails when no container ID is given"""
    h.create(h.bundle(["sleep", "100"]))
    assert h.rt(command).rc != 0
    assert all(h.rt.status(cid) == "created" for cid in h.rt.ids())


@case("LC-11", "runtime.md#create", "MUST")
def test_create_duplicate_id_fails(h):
    """create with an ID in use fails and the existing container is untouched"""
    c = h.create(h.bundle(["sleep", "100"]))
    again = h.create(h.bundle(["sleep", "200"]), cid=c.cid, check=False)
    assert again.result.rc != 0
    st = c.state()
    assert st["status"] == "created" and st["pid"] == c.pid and procfs.alive(c.pid)
    assert h.rt.ids().count(c.cid) == 1


@case("LC-12", "runtime.md#create", "MUST")
def test_config_changes_after_create_ignored(h):
    """changes to config.json after create do not affect the container"""
    b = _marker_bundle(h)
    c = h.create(b)
    path = os.path.join(b, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["process"]["args"] = ["sh", "-c", "echo config-was-reread; exec sleep 1000"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    c.start()
    out = c.wait_output(MARK)
    assert "config-was-reread" not in out


@case("LC-13", "runtime.md#delete", "MAY")
def test_id_reusable_after_delete(h):
    """once deleted, a container's ID can be used again"""
    c = h.create(h.bundle(["true"]))
    c.start()
    c.wait_stopped()
    c.delete()
    again = h.create(h.bundle(["sleep", "100"]), cid=c.cid)
    assert again.state()["status"] == "created"


@case("LC-14", "runtime.md#state", "MUST")
def test_state_bundle_absolute_from_relative(h):
    """state.bundle is absolute even when --bundle was given relative"""
    b = h.bundle(["sleep", "100"])
    cid = h.cid()
    r = h.rt("create", "--bundle", os.path.basename(b), cid, cwd=os.path.dirname(b))
    assert r.ok, r
    assert h.rt.state(cid)["bundle"] == b


@case("LC-15", "runtime.md#state", "MUST")
def test_state_annotations(h):
    """state carries the config's annotations (or none when there are none)"""
    notes = {"org.example.conformance": "yes", "second": "two words"}
    c = h.create(h.bundle(["sleep", "100"], edit=lambda cfg: cfg.update(annotations=notes)))
    assert c.state().get("annotations") == notes
    plain = h.create(h.bundle(["sleep", "100"]))
    assert plain.state().get("annotations") in (None, {})


@case("LC-16", "runc: run", "RUNC")
def test_run_exit_status(h):
    """run in the foreground exits with the container process's exit status"""
    r = h.run(h.bundle(["sh", "-c", "echo out; exit 7"]))
    assert r.rc == 7, r
    assert "out" in r.out
    assert h.rt.ids() == [], "run without --keep must delete the container"


@case("LC-17", "runc: run", "RUNC")
def test_run_passes_stdin(h):
    """run in the foreground gives the container the caller's stdin and stdout"""
    r = h.run(h.bundle(["sh", "-c", "read line; echo got:$line"]), input="hello\n")
    assert r.rc == 0, r
    assert "got:hello" in r.out


@case("LC-18", "runc: run --detach", "RUNC")
def test_run_detach(h):
    """run --detach returns at once and leaves the container running"""
    b = h.bundle(["sleep", "100"])
    cid = h.cid()
    pidfile = h.path("detach.pid")
    with open(h.path("detach.out"), "wb") as out:
        r = h.rt("run", "--detach", "--pid-file", pidfile, "--bundle", b, cid, stdout=out,
                 timeout=30)
    assert r.ok, r
    with open(pidfile) as f:
        h.track(int(f.read()))
    assert h.rt.status(cid) == "running"


@deviation("crun", "crun 1.8.1's run has no --keep option")
@case("LC-19", "runc: run --keep", "RUNC")
def test_run_keep(h):
    """run --keep leaves the stopped container for state and delete"""
    cid = h.cid()
    r = h.run(h.bundle(["true"]), cid=cid, extra=("--keep",))
    assert r.rc == 0, r
    assert h.rt.status(cid) == "stopped"
    assert h.rt("delete", cid).ok


@deviation("crun", "crun 1.8.1 resolves a relative --pid-file against the bundle directory")
@case("LC-20", "runc: create --pid-file", "RUNC")
def test_pid_file(h):
    """--pid-file receives the init's pid; a relative path is taken from the cwd"""
    b = h.bundle(["sleep", "100"])
    cid = h.cid()
    r = h.rt("create", "--bundle", b, "--pid-file", "rel.pid", cid, cwd=h.tmp)
    assert r.ok, r
    with open(h.path("rel.pid")) as f:
        text = f.read()
    assert text.strip().isdigit(), repr(text)
    h.track(int(text))
    assert int(text) == h.rt.state(cid)["pid"]


@case("LC-21", "runc: create --bundle", "RUNC")
def test_bundle_defaults_to_cwd(h):
    """without --bundle the current directory is the bundle"""
    b = h.bundle(["sleep", "100"])
    cid = h.cid()
    r = h.rt("create", cid, cwd=b)
    assert r.ok, r
    st = h.rt.state(cid)
    h.track(st["pid"])
    assert st["bundle"] == b


@case("LC-22", "runc: list", "RUNC")
def test_list(h):
    """list shows each container with its status; -q prints only IDs; json is parseable"""
    a = h.create(h.bundle(["sleep", "100"]))
    b = h.start(h.bundle(["sleep", "100"]))
    assert sorted(h.rt("list", "-q").out.split()) == sorted([a.cid, b.cid])
    table = h.rt("list").out
    assert a.cid in table and b.cid in table and "running" in table, table
    entries = {e["id"]: e for e in json.loads(h.rt("list", "--format", "json").out)}
    assert entries[a.cid]["status"] == "created" and entries[a.cid]["pid"] == a.pid
    assert entries[b.cid]["status"] == "running" and entries[b.cid]["bundle"] == b.bundle


@case("LC-23", "runc: --log-format json", "RUNC")
def test_errors_exit_1_and_json_log(h):
    """a failing command exits 1; with --log-format json its error is one JSON object"""
    r = h.rt("--log-format", "json", "state", h.cid())
    assert r.rc == 1, r
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert lines, r
    entry = json.loads(lines[-1])
    assert entry.get("level") == "error" and entry.get("msg"), entry


@case("LC-24", "runc: --log", "RUNC")
def test_log_file(h):
    """--log FILE receives the error messages"""
    log = h.path("runtime.log")
    r = h.rt("--log", log, "--log-format", "json", "start", h.cid())
    assert r.rc == 1
    with open(log) as f:
        entries = [json.loads(ln) for ln in f if ln.strip()]
    assert any(e.get("level") == "error" for e in entries), entries


@needs("pause")
@case("LC-25", "runc: pause/resume", "RUNC")
def test_pause_resume(h):
    """pause freezes every process (state paused); resume thaws it (running)"""
    c = h.start(h.bundle(["sleep", "100"]))
    assert h.rt("pause", c.cid).ok
    assert c.status() == "paused"
    assert cgroupfs.freezer_state(c.pid) == "FROZEN"
    assert h.rt("resume", c.cid).ok
    assert c.status() == "running"
    assert cgroupfs.freezer_state(c.pid) == "THAWED"


@needs("pause")
@case("LC-26", "runc: pause", "RUNC")
def test_pause_stopped_fails(h):
    """pause of a stopped container fails"""
    c = h.start(h.bundle(["true"]))
    c.wait_stopped()
    assert h.rt("pause", c.cid).rc != 0
    assert c.status() == "stopped"


# The runtime-spec's schema/state-schema.json (v1.2.0), as a JSON Schema in Python.
STATE_SCHEMA = {
    "type": "object",
    "required": ["ociVersion", "id", "status", "bundle"],
    "properties": {
        "ociVersion": {"type": "string", "pattern": SEMVER.pattern},
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["creating", "created", "running", "stopped"]},
        "pid": {"type": "integer", "minimum": 0},
        "bundle": {"type": "string"},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _check_schema(doc):
    try:
        import jsonschema
    except ImportError:  # the same checks by hand
        assert all(k in doc for k in STATE_SCHEMA["required"]), doc
        assert doc["status"] in STATE_SCHEMA["properties"]["status"]["enum"], doc
        assert isinstance(doc.get("pid", 0), int) and doc.get("pid", 0) >= 0, doc
        return
    jsonschema.validate(doc, STATE_SCHEMA)


@case("LC-27", "runtime.md#state (schema/state-schema.json)", "MUST")
def test_state_schema(h):
    """the state JSON adheres to the runtime-spec's state schema in every state"""
    c = h.create(h.bundle(["sleep", "100"]))
    _check_schema(c.state())
    c.start()
    _check_schema(c.state())
    c.kill("KILL")
    c.wait_stopped()
    _check_schema(c.state())


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@deviation("crun", "crun 1.8.1 reports rootfs as the config's root.path ('rootfs'), not the "
           "absolute path")
@case("LC-28", "runc: state", "RUNC")
def test_state_runc_fields(h):
    """state also carries runc's rootfs, created (RFC 3339) and owner"""
    b = h.bundle(["sleep", "100"])
    st = h.create(b).state()
    assert st.get("rootfs") == os.path.join(b, "rootfs"), st
    assert RFC3339.match(st.get("created", "")), st
    assert isinstance(st.get("owner"), str), st


@pytest.mark.slow
@case("LC-29", "runtime.md#create", "RUNC")
def test_concurrent_containers(h):
    """16 containers created, started and deleted concurrently all work and leave nothing"""
    from concurrent.futures import ThreadPoolExecutor

    bundles = [h.bundle(["sh", "-c", f"echo ran-{i}"]) for i in range(16)]

    def cycle(b):
        cid = h.cid()
        created = h.rt("create", "--bundle", b, cid, timeout=120)
        started = h.rt("start", cid, timeout=120) if created.ok else created
        h.rt.wait_status(cid, "stopped", 30)
        deleted = h.rt("delete", cid, timeout=120)
        return cid, created, started, deleted

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(cycle, bundles))
    bad = [(cid, c, s, d) for cid, c, s, d in results if not (c.ok and s.ok and d.ok)]
    assert not bad, bad[:2]
    assert h.rt.ids() == []


@case("LC-30", "runtime.md#state", "MUST")
def test_external_exit_is_stopped(h):
    """a container whose process was killed from outside the runtime reports stopped"""
    c = h.start(h.bundle(["sleep", "1000"]))
    os.kill(c.pid, 9)
    c.wait_stopped()
