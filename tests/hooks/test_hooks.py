"""OCI hooks: order, namespaces, the state on stdin, args/env, timeouts, failures."""

from __future__ import annotations

import json
import os

import pytest

from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

HOST_MNT = os.readlink("/proc/self/ns/mnt")
HOST_PID_NS = os.readlink("/proc/self/ns/pid")


def recorder(name: str, logdir: str) -> dict:
    """A hook that records its stdin, mount and pid namespaces, args and env under
    `logdir`."""
    script = (f'cat > "{logdir}/{name}.state"; readlink /proc/self/ns/mnt > "{logdir}/{name}.mnt";'
              f' readlink /proc/self/ns/pid > "{logdir}/{name}.pidns";'
              f' echo "$@" > "{logdir}/{name}.args"; echo "$HOOK_VAR" > "{logdir}/{name}.env";'
              f' echo {name} >> "{logdir}/order"')
    return {"path": "/bin/sh", "args": ["sh", "-c", script, "sh", "a1", "a2"],
            "env": ["PATH=/bin:/usr/bin", f"HOOK_VAR={name}-env"]}


def test_all_hooks_in_order_with_state_and_namespaces(ocirt, bundle, tmp_path):
    log = tmp_path / "hooklog"
    log.mkdir()
    os.chmod(log, 0o777)

    def edit(c):
        c["mounts"].append({"destination": "/hooklog", "source": str(log),
                            "options": ["bind"]})
        c["hooks"] = {name: [recorder(name, str(log))] for name in
                      ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
        c["hooks"]["startContainer"] = [recorder("startContainer", "/hooklog")]
        c["annotations"] = {"org.example.key": "value"}
    b = bundle(["sleep", "100"], edit=edit)
    ocirt("create", "--bundle", b, "c1", check=True)
    pid = ocirt.state("c1")["pid"]
    container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    container_pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
    assert (log / "order").read_text().split() == ["prestart", "createRuntime",
                                                   "createContainer"]
    ocirt("start", "c1", check=True)
    assert (log / "order").read_text().split()[3:] == ["startContainer", "poststart"]
    ocirt("kill", "c1", "KILL", check=True)
    assert ocirt.wait_status("c1", "stopped")
    ocirt("delete", "c1", check=True)
    assert (log / "order").read_text().split()[-1] == "poststop"

    expected_status = {"prestart": "created", "createRuntime": "creating",
                       "createContainer": "creating", "startContainer": "created",
                       "poststart": "running", "poststop": "stopped"}
    for name, status in expected_status.items():
        state = json.loads((log / f"{name}.state").read_text())
        assert state["id"] == "c1" and state["bundle"] == b, name
        assert state["status"] == status, name
        assert state["annotations"] == {"org.example.key": "value"}, name
        assert (log / f"{name}.args").read_text().strip() == "a1 a2", name
        assert (log / f"{name}.env").read_text().strip() == f"{name}-env", name
        # as the runtime sees it, or as the container does for hooks run inside it
        inside = name in ("createContainer", "startContainer")
        assert state["pid"] == (1 if inside else pid), name
    for name in ("prestart", "createRuntime", "poststart", "poststop"):
        assert (log / f"{name}.mnt").read_text().strip() == HOST_MNT, name
        # poststart: `start` joined the container's pid namespace for the startContainer
        # hook's fork (ocirt.runtime.exec) and must have come back for its own children
        assert (log / f"{name}.pidns").read_text().strip() == HOST_PID_NS, name
    for name in ("createContainer", "startContainer"):
        assert (log / f"{name}.mnt").read_text().strip() == container_mnt, name
        assert (log / f"{name}.pidns").read_text().strip() == container_pid_ns, name


def test_hook_timeout_fails_create(ocirt, bundle):
    hook = {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
    b = bundle(["true"], edit=lambda c: c.update(hooks={"createRuntime": [hook]}))
    r = ocirt("create", "--bundle", b, "c1", timeout=20)
    assert r.rc == 1 and "ran past specified timeout of 1s" in r.err
    assert_nothing_left(ocirt.root, "c1", b)


def test_failing_poststart_kills_the_container(ocirt, bundle):
    hook = {"path": "/bin/false", "args": ["false"]}
    b = bundle(["sleep", "100"], edit=lambda c: c.update(hooks={"poststart": [hook]}))
    ocirt("create", "--bundle", b, "c1", check=True)
    r = ocirt("start", "c1")
    assert r.rc == 1 and "poststart hook #0" in r.err
    assert ocirt.wait_status("c1", "stopped")


def test_failing_poststop_is_only_a_warning(ocirt, bundle):
    hook = {"path": "/bin/false", "args": ["false"]}
    b = bundle(["true"], edit=lambda c: c.update(hooks={"poststop": [hook]}))
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 0
    assert "poststop hook #0" in r.err and "level=warning" in r.err
    assert ocirt.ids() == []


def test_failing_create_container_hook(ocirt, bundle):
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}
    b = bundle(["true"], edit=lambda c: c.update(hooks={"createContainer": [hook]}))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1 and "createContainer hook #0" in r.err and "exit status 9" in r.err
    assert_nothing_left(ocirt.root, "c1", b)


def test_failing_start_container_hook_fails_start(ocirt, bundle):
    hook = {"path": "/bin/false", "args": ["false"]}
    b = bundle(["sleep", "100"], edit=lambda c: c.update(hooks={"startContainer": [hook]}))
    ocirt("create", "--bundle", b, "c1", check=True)
    r = ocirt("start", "c1")
    assert r.rc == 1 and "startContainer hook #0" in r.err
    assert ocirt.wait_status("c1", "stopped")


def test_every_poststop_hook_runs_even_after_a_failure(ocirt, bundle, tmp_path):
    marker = tmp_path / "second"
    hooks = [{"path": "/bin/false", "args": ["false"]},
             {"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}]
    b = bundle(["true"], edit=lambda c: c.update(hooks={"poststop": hooks}))
    assert ocirt("run", "--bundle", b, "c1").rc == 0
    assert marker.exists()
