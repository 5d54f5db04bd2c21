"""What the CRI tests ask containerd and the runtimes, again and again."""

from __future__ import annotations

import json
import time
from typing import Any

from conformance import cgroupfs
from tests.cri import configs
from tests.cri.conftest import RUNTIME_ROOT, Env, Pod, runtimeclass_handler

OCIRT = runtimeclass_handler()
HANDLERS = ["runc", OCIRT]


def status(env: Env, cid: str) -> Any:
    return env.rt.ContainerStatus(env.pb.ContainerStatusRequest(container_id=cid),
                                  timeout=30).status


def info(env: Env, cid: str) -> dict:
    r = env.rt.ContainerStatus(env.pb.ContainerStatusRequest(container_id=cid, verbose=True),
                               timeout=30)
    return json.loads(r.info["info"])


def start(pod: Pod, name: str, command: list[str], **kw) -> str:
    cid = pod.container(name, command, **kw)
    pod.env.rt.StartContainer(pod.env.pb.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def wait_exited(env: Env, cid: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while (st := status(env, cid)).state != env.pb.CONTAINER_EXITED:
        assert time.monotonic() < deadline, f"{cid} still {st.state} after {timeout} s"
        time.sleep(0.1)
    return st


def wait_log(pod: Pod, name: str, text: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """The container's log once a line `text` is in it (the shim writes it
    asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        log = pod.log(name)
        if any(t == text for _, t in log):
            return log
        assert time.monotonic() < deadline, f"no {text!r} in the log of {name}: {log}"
        time.sleep(0.05)


def exec_sync(env: Env, cid: str, *cmd: str, timeout: int = 20) -> Any:
    return env.rt.ExecSync(env.pb.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                  timeout=timeout), timeout=timeout + 30)


def runtime_binary(env: Env, handler: str) -> str:
    return "runc" if handler == "runc" else configs.ocirt_binary_of(env.daemon.config_path)


def runtime_state(env: Env, handler: str, cid: str) -> dict | None:
    """The container as the handler's runtime binary reports it, from the state directory
    the runc shim gave it (`--root`); None when the runtime has no such container."""
    binary = runtime_binary(env, handler)
    r = env.daemon.in_sandbox(binary, "--root", RUNTIME_ROOT, "state", cid)
    if r.returncode != 0:
        assert "does not exist" in r.stderr, f"{binary} state {cid}: {r.stderr}"
        return None
    return json.loads(r.stdout)


def assert_made_by(env: Env, handler: str, cid: str, pid: int) -> dict:
    """The handler's runtime reports the container running with the PID containerd
    knows, and the other runtime does not: proof of which binary the shim ran (the two
    share the shim's state directory; runc cannot read ocirt's state, and ocirt reads
    runc's as a stopped container)."""
    state = runtime_state(env, handler, cid)
    assert state is not None and state["status"] == "running", state
    assert state["pid"] == pid
    other = runtime_binary(env, OCIRT if handler == "runc" else "runc")
    r = env.daemon.in_sandbox(other, "--root", RUNTIME_ROOT, "state", cid)
    assert r.returncode != 0 or json.loads(r.stdout)["status"] != "running", r.stdout
    return state


V2 = cgroupfs.is_unified()


def host_cgroup(env: Env, cid: str, controller: str, name: str) -> str:
    """A file of the container's cgroup as the daemon's side sees it: in `controller`'s
    v1 hierarchy, or on a cgroup v2-only host in the one unified hierarchy."""
    top = "/sys/fs/cgroup" if V2 else f"/sys/fs/cgroup/{controller}"
    r = env.daemon.in_sandbox("cat", f"{top}/{env.cgroup_parent}/{cid}/{name}")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()
