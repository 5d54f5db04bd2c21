"""The state store and state machine (no root needed)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ocirt.errors import ContainerNotExist, InvalidState, OcirtError
from ocirt.linux import proc
from ocirt.state import (
    ALLOWED,
    CREATED,
    PAUSED,
    RUNNING,
    STOPPED,
    Container,
    Store,
    check_transition,
    rfc3339_nano,
    validate_id,
)


@pytest.mark.parametrize("cid", ["abc", "a.b-c_d+e,f", "0123456789" * 10])
def test_valid_ids(cid):
    assert validate_id(cid) == cid


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "a b", "ä", "a:b", "a\0b"])
def test_invalid_ids(cid):
    with pytest.raises(OcirtError):
        validate_id(cid)


def test_claim_is_exclusive(tmp_path):
    store = Store(str(tmp_path / "root"))
    store.claim("c1").close()
    with pytest.raises(OcirtError, match="already exists"):
        store.claim("c1")
    assert oct(os.stat(store.root).st_mode & 0o777) == "0o700"


def test_save_is_atomic_and_load_roundtrips(tmp_path):
    store = Store(str(tmp_path))
    store.claim("c1").close()
    c = Container("c1", store.dir("c1"), {"pid": 0, "bundle": "/b"})
    store.save(c)
    assert store.load("c1").data == {"pid": 0, "bundle": "/b"}
    assert os.listdir(store.dir("c1")) == ["state.json"]  # no temp file left behind


def test_missing_container(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(ContainerNotExist):
        store.load("nope")
    with pytest.raises(ContainerNotExist):
        store.lock("nope")


def test_lock_serializes_and_sees_deletion(tmp_path):
    store = Store(str(tmp_path))
    store.claim("c1").close()
    order = []
    lock = store.lock("c1")

    def other():
        try:
            store.lock("c1")
            order.append("locked")
        except ContainerNotExist:
            order.append("gone")

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.2)
    assert order == []  # blocked while we hold the lock
    store.remove("c1")
    lock.close()
    t.join(5)
    assert order == ["gone"]


def test_status_is_derived_from_the_process(tmp_path):
    store = Store(str(tmp_path))
    store.claim("c1").close()
    me = os.getpid()
    c = Container("c1", store.dir("c1"), {"pid": me, "init_start": proc.start_time(me)})
    assert c.status() == RUNNING
    open(c.path("exec.fifo"), "w").close()
    assert c.status() == CREATED
    c.data["init_start"] = proc.start_time(me) + 1  # a recycled PID
    assert c.status() == STOPPED
    c.data.update(pid=0)
    assert c.status() == STOPPED
    assert c.oci_state()["pid"] == 0


def test_transitions_are_in_one_table():
    check_transition("start", CREATED, "c")
    with pytest.raises(InvalidState, match="cannot start an already running container"):
        check_transition("start", RUNNING, "c")
    with pytest.raises(InvalidState, match="cannot start a container that has stopped"):
        check_transition("start", STOPPED, "c")
    with pytest.raises(InvalidState, match="that is not stopped: running"):
        check_transition("delete", RUNNING, "c")
    with pytest.raises(InvalidState, match="container not running"):
        check_transition("kill", STOPPED, "c")
    with pytest.raises(InvalidState, match="container not paused"):
        check_transition("resume", RUNNING, "c")
    assert PAUSED in ALLOWED["kill"] and CREATED in ALLOWED["delete"]


def test_rfc3339_nano_trims_zeros():
    assert rfc3339_nano(1_700_000_000_123_400_000) == "2023-11-14T22:13:20.1234Z"
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_an_unwritable_state_root_is_one_line_naming_it():
    """Not an internal error: the directory and the reason, as runc's mkdir error."""
    import shutil
    import subprocess
    import tempfile

    from conformance.bundle import default_config, make_bundle
    from tests.conftest import ocirt_binary

    top = tempfile.mkdtemp(prefix="ocirt-unwritable-")  # nobody may enter it, not write
    try:
        os.chmod(top, 0o755)
        bundle = make_bundle(os.path.join(top, "bundle"), config=default_config(["true"]))
        root = os.path.join(top, "root")
        os.mkdir(root, 0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            ocirt_binary(), "--root", root, "create", "--bundle", bundle,
                            "c1"], capture_output=True, text=True, cwd="/",
                           env={"PATH": os.environ["PATH"]})
    finally:
        shutil.rmtree(top)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr, r.stderr
    assert f"create state directory {root}/c1: permission denied" in r.stderr
