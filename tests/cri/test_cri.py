"""Kubernetes' path to ocirt: the pod lifecycle kubelet drives over the CRI, against
containerd's CRI plugin configured by appending contrib/containerd/config.toml to
Debian's stock config file (as the README says), for the RuntimeClass example's handler
(ocirt) beside runc, the reference. Each test checks what the process inside sees and what
containerd, the runtime and the host see; afterwards nothing of the pod may be left."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest

from tests.cri import configs
from tests.cri.client import grpc
from tests.cri.conftest import Env
from tests.cri.helpers import (
    HANDLERS,
    V2,
    assert_made_by,
    exec_sync,
    host_cgroup,
    info,
    runtime_state,
    start,
    status,
    wait_exited,
    wait_log,
)
from tests.cri.websocket import Channels, exit_code

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture(scope="module")
def env(cri_env_factory, tmp_path_factory) -> Env:
    return cri_env_factory(configs.debian_with_snippet(str(tmp_path_factory.mktemp("cfg"))))


@pytest.fixture
def cri(env: Env, pods_removed) -> Env:
    pods_removed.append(env)
    return env


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_lifecycle(cri: Env, handler: str) -> None:
    pb, rt = cri.pb, cri.rt
    pod = cri.pod(handler)
    ps = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
    assert ps.state == pb.SANDBOX_READY and ps.runtime_handler == handler
    pod_info = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id,
                                                              verbose=True)).info
    assert_made_by(cri, handler, pod.id, json.loads(pod_info["info"])["pid"])

    cid = pod.container("main", ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; "
                                 "echo started; while :; do sleep 1 & wait $!; done"])
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_CREATED and st.started_at == 0
    # containerd's CRI creates the runtime's container only at StartContainer.
    assert runtime_state(cri, handler, cid) is None
    rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_RUNNING and st.started_at > st.created_at > 0
    wait_log(pod, "main", "started")
    state = assert_made_by(cri, handler, cid, info(cri, cid)["pid"])
    # Inside: its own PID namespace, the command as PID 1, the pod's cgroup path.
    # v2: one line "0::PATH"; containerd gives the container its own cgroup namespace
    # there, so PATH is its root. v1: the host's cgroup namespace, the full path.
    line = "^0::" if V2 else ":memory:"
    r = exec_sync(cri, cid, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                  f"grep {line} /proc/self/cgroup")
    assert r.exit_code == 0, r.stderr
    cmdline, cgroup = r.stdout.decode().splitlines()
    assert cmdline.startswith("sh -c trap ")
    if V2:
        assert cgroup == "0::/"
    else:
        assert cgroup.endswith(f":memory:/{cri.cgroup_parent}/{cid}")
    # Host side: the init is in that cgroup.
    assert str(state["pid"]) in host_cgroup(cri, cid, "memory", "cgroup.procs").split()

    t0 = time.monotonic()
    rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=20))
    assert time.monotonic() - t0 < 10, "SIGTERM was handled: no need to wait the grace"
    st = status(cri, cid)
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 0, st
    assert st.reason == "Completed" and st.finished_at >= st.started_at
    assert ("stdout", "got TERM") in pod.log("main")
    rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=20))  # idempotent

    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    listed = rt.ListContainers(pb.ListContainersRequest(
        filter=pb.ContainerFilter(pod_sandbox_id=pod.id))).containers
    assert [c.id for c in listed] == []
    with pytest.raises(grpc.RpcError) as e:
        status(cri, cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert cid not in cri.leftovers()

    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    ps = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
    assert ps.state == pb.SANDBOX_NOTREADY
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    with pytest.raises(grpc.RpcError) as e:
        rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod.id))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert cri.wait_clean() == []


@pytest.mark.parametrize("handler", HANDLERS)
def test_stop_kills_after_the_grace_period(cri: Env, handler: str) -> None:
    pod = cri.pod(handler)
    cid = start(pod, "stubborn", ["sh", "-c", "trap '' TERM; echo ignoring; "
                                  "while :; do sleep 1; done"])
    wait_log(pod, "stubborn", "ignoring")
    t0 = time.monotonic()
    cri.rt.StopContainer(cri.pb.StopContainerRequest(container_id=cid, timeout=2))
    took = time.monotonic() - t0
    assert 2 <= took < 10, took
    st = status(cri, cid)
    assert st.state == cri.pb.CONTAINER_EXITED and st.exit_code == 137, st


@pytest.mark.parametrize("handler", HANDLERS)
def test_exit_codes_and_logs(cri: Env, handler: str) -> None:
    pod = cri.pod(handler)
    cid = start(pod, "fails", ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"])
    st = wait_exited(cri, cid)
    assert st.exit_code == 7 and st.reason == "Error", st
    log = wait_log(pod, "fails", "to-err")
    assert ("stdout", "to-out") in log and ("stderr", "to-err") in log
    # A command that is not there: StartContainer fails with the runtime's reason.
    cid = pod.container("missing", ["/no/such/program"])
    with pytest.raises(grpc.RpcError) as e:
        cri.rt.StartContainer(cri.pb.StartContainerRequest(container_id=cid))
    assert "/no/such/program" in e.value.details()
    assert "no such file or directory" in e.value.details(), e.value.details()
    st = status(cri, cid)
    assert st.state == cri.pb.CONTAINER_EXITED and st.exit_code == 128, st


@pytest.mark.parametrize("handler", HANDLERS)
def test_exec_sync(cri: Env, handler: str) -> None:
    pod = cri.pod(handler)
    cid = start(pod, "target", ["sleep", "300"],
                envs=[cri.pb.KeyValue(key="FROM_POD", value="pod value")])
    r = exec_sync(cri, cid, "sh", "-c", 'echo "$FROM_POD"; echo oops >&2; exit 3')
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"pod value\n", b"oops\n")
    r = exec_sync(cri, cid, "true")
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"", b"")
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(cri, cid, "/no/such/program")
    assert '"/no/such/program"' in e.value.details()
    assert "no such file or directory" in e.value.details(), e.value.details()
    # A timeout ends the call and the command.
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        exec_sync(cri, cid, "sleep", "77", timeout=1)
    assert time.monotonic() - t0 < 10
    assert "timeout" in e.value.details().lower(), e.value.details()
    deadline = time.monotonic() + 10
    while b"sleep 77" in exec_sync(cri, cid, "ps", "-o", "args").stdout:
        assert time.monotonic() < deadline, "the timed-out command is still running"
        time.sleep(0.2)
    assert status(cri, cid).state == cri.pb.CONTAINER_RUNNING


@pytest.mark.parametrize("handler", HANDLERS)
def test_streaming_exec_with_a_tty(cri: Env, handler: str) -> None:
    """kubectl exec -it: Exec returns a URL on the streaming server (loopback), spoken to
    over WebSocket; the shell gets a terminal of the size the client sends."""
    pod = cri.pod(handler)
    cid = start(pod, "target", ["sleep", "300"])
    url = cri.rt.Exec(cri.pb.ExecRequest(container_id=cid, cmd=["sh"], tty=True, stdin=True,
                                         stdout=True)).url
    session = Channels(url)
    assert session.protocol == "v4.channel.k8s.io"
    session.resize(100, 40)
    session.send(0, b"tty; stty size; [ -t 0 ] && echo IS-A-TTY; exit 3\n")
    code = exit_code(session.run())
    out = session.output[1].decode(errors="replace").replace("\r", "")
    assert code == 3, out
    lines = out.split("\n")
    assert "40 100" in lines and "IS-A-TTY" in lines, out
    assert any(line.startswith("/dev/pts/") for line in lines), out
    assert session.output[2] == b""  # a terminal has no separate stderr
    # The exec'd shell is gone; the container runs on.
    assert b"sh" not in exec_sync(cri, cid, "ps", "-o", "comm").stdout.split()
    assert status(cri, cid).state == cri.pb.CONTAINER_RUNNING


@pytest.mark.parametrize("handler", HANDLERS)
def test_update_resources_and_stats(cri: Env, handler: str) -> None:
    pb = cri.pb
    pod = cri.pod(handler)
    cid = start(pod, "limited", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64k "
                                 "count=20000; echo worked; sleep 300"],
                resources={"memory_limit_in_bytes": 64 * MiB, "cpu_shares": 512})
    wait_log(pod, "limited", "worked")
    # v2 (the container's own cgroup namespace): memory.max, and cpu.weight from the
    # shares. ocirt converts as runc 1.3.2+ and crun do, a quadratic in log2 (512 -> 59,
    # 256 -> 35); the installed runc may be older, with 1 + (shares - 2) * 9999 / 262142
    # (512 -> 20, 256 -> 10).
    if V2:
        inside = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.weight"
        quota = " /sys/fs/cgroup/cpu.max"
        weights = {(b"59", b"35")} | ({(b"20", b"10")} if handler == "runc" else set())
        limit_file, quota_file, quota_value = "memory.max", "cpu.max", "50000 100000"
    else:
        inside = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares"
        quota, weights = " /sys/fs/cgroup/cpu/cpu.cfs_quota_us", {(b"512", b"256")}
        limit_file, quota_file, quota_value = "memory.limit_in_bytes", "cpu.cfs_quota_us", "50000"
    r = exec_sync(cri, cid, "sh", "-c", inside)
    assert len(r.stdout.split()) == 2, r
    limit, weight = r.stdout.split()
    expected = next((w for w in weights if w[0] == weight), None)
    assert limit == str(64 * MiB).encode() and expected is not None, r
    cri.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(
            memory_limit_in_bytes=96 * MiB, cpu_shares=256, cpu_period=100000,
            cpu_quota=50000)))
    r = exec_sync(cri, cid, "sh", "-c", inside + quota)
    assert r.stdout.split() == [str(96 * MiB).encode(), expected[1],
                                *quota_value.encode().split()], r
    assert host_cgroup(cri, cid, "memory", limit_file) == str(96 * MiB)
    assert host_cgroup(cri, cid, "cpu", quota_file) == quota_value

    stats = cri.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.attributes.id == cid and stats.attributes.metadata.name == "limited"
    # dd copied 1.25 GiB: well over a millisecond of CPU.
    assert stats.cpu.usage_core_nano_seconds.value > 1_000_000, stats.cpu
    usage = int(host_cgroup(cri, cid, "memory",
                            "memory.current" if V2 else "memory.usage_in_bytes"))
    assert 0 < stats.memory.usage_bytes.value <= 96 * MiB
    assert abs(stats.memory.usage_bytes.value - usage) < 4 * MiB, (stats.memory, usage)


@pytest.mark.parametrize("handler", HANDLERS)
def test_user_env_workdir_readonly_rootfs(cri: Env, handler: str) -> None:
    pb = cri.pb
    pod = cri.pod(handler)
    script = 'echo "$GREETING"; pwd; id -u; id -g; touch /x 2>&1; echo "rc=$?"; echo done'
    cid = start(pod, "who", ["sh", "-c", script], working_dir="/etc",
                envs=[pb.KeyValue(key="GREETING", value="hello cri")],
                security={"run_as_user": pb.Int64Value(value=1000),
                          "run_as_group": pb.Int64Value(value=1000),
                          "readonly_rootfs": True})
    assert wait_exited(cri, cid).exit_code == 0
    lines = [t for _, t in wait_log(pod, "who", "done")]
    assert lines == ["hello cri", "/etc", "1000", "1000",
                     "touch: /x: Read-only file system", "rc=1", "done"], lines


@pytest.mark.parametrize("handler", HANDLERS)
def test_host_path_mounts(cri: Env, handler: str) -> None:
    pb = cri.pb
    rw = tempfile.mkdtemp(prefix="ocirt-cri-rw-")
    ro = tempfile.mkdtemp(prefix="ocirt-cri-ro-")
    try:
        with open(os.path.join(rw, "in.txt"), "w") as f:
            f.write("from the host\n")
        pod = cri.pod(handler)
        cid = start(pod, "mounts", ["sh", "-c", "cat /data/in.txt; "
                                    "echo from the container >/data/out.txt; "
                                    "touch /ro/x 2>&1; echo done"],
                    mounts=[pb.Mount(container_path="/data", host_path=rw),
                            pb.Mount(container_path="/ro", host_path=ro, readonly=True)])
        assert wait_exited(cri, cid).exit_code == 0
        lines = [t for _, t in wait_log(pod, "mounts", "done")]
        assert lines == ["from the host", "touch: /ro/x: Read-only file system", "done"]
        with open(os.path.join(rw, "out.txt")) as f:
            assert f.read() == "from the container\n"
        assert os.listdir(ro) == []
        mounts = {m.container_path: m for m in status(cri, cid).mounts}
        assert mounts["/data"].host_path == rw and mounts["/ro"].readonly
    finally:
        shutil.rmtree(rw)
        shutil.rmtree(ro)


@pytest.mark.parametrize("handler", HANDLERS)
def test_oom_kill(cri: Env, handler: str) -> None:
    """A container past its memory limit is killed by the kernel; containerd learns it
    from the cgroup (the shim watches it) and reports OOMKilled, as kubelet expects."""
    pod = cri.pod(handler)
    # tail keeps the one endless "line" of /dev/zero in memory.
    cid = start(pod, "hog", ["tail", "/dev/zero"],
                resources={"memory_limit_in_bytes": 32 * MiB})
    st = wait_exited(cri, cid, timeout=60)
    assert st.reason == "OOMKilled" and st.exit_code == 137, st
