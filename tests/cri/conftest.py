"""Fixtures for the CRI tests: one containerd (CRI plugin, private sandbox) per module,
the busybox images imported into it, and pods that are removed, with everything they
made checked gone, after each test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from conformance.bundle import make_rootfs
from tests.conftest import IN_CHROOT, REPO
from tests.cri import images
from tests.cri.client import grpc

RUNTIME_ROOT = "/run/containerd/runc/k8s.io"  # the runc shim's --root for namespace k8s.io
RUNTIMECLASS = os.path.join(REPO, "contrib", "kubernetes", "runtimeclass.yaml")


def runtimeclass_handler() -> str:
    """The handler the RuntimeClass example names: what a pod with
    `runtimeClassName: ocirt` asks the CRI for."""
    with open(RUNTIMECLASS) as f:
        handlers = [line.split(":", 1)[1].strip() for line in f
                    if line.startswith("handler:")]
    assert len(handlers) == 1, f"{RUNTIMECLASS}: one handler expected"
    return handlers[0]


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """No containerd to test against: the one reason to skip all of tests/cri (tests that
    run pods are also marked `root`; a chroot cannot run containers at all)."""
    if shutil.which("containerd") is not None and shutil.which("ctr") is not None:
        return
    skip = pytest.mark.skip(reason="containerd not installed (apt-get install containerd)")
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cri_modules(tmp_path_factory: Any) -> tuple[ModuleType, ModuleType]:
    from tests.cri.client import generate
    return generate(str(tmp_path_factory.mktemp("cri-stubs")))


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: Any) -> str:
    work = tmp_path_factory.mktemp("cri-images")
    return images.build_archive(make_rootfs(str(work / "rootfs")), str(work),
                                images.default_sandbox_image())


_SEQ = itertools.count(1)


@dataclass
class Pod:
    """A pod sandbox and the configuration it was made with (CreateContainer takes it
    again, as kubelet passes it)."""

    env: Env
    id: str
    handler: str
    config: Any
    logdir: str

    def container(self, name: str, command: list[str], **kw: Any) -> str:
        """Create (not start) a container in this pod; `kw` are ContainerConfig fields,
        `security` LinuxContainerSecurityContext fields, `resources`
        LinuxContainerResources fields."""
        pb = self.env.pb
        security = pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER,
                                                 ipc=pb.POD),
            **kw.pop("security", {}))
        linux = pb.LinuxContainerConfig(security_context=security,
                                        resources=pb.LinuxContainerResources(
                                            **kw.pop("resources", {})))
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                    image=pb.ImageSpec(image=images.APP), command=command,
                                    log_path=f"{name}.log", linux=linux, **kw)
        return self.env.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=self.id, config=config, sandbox_config=self.config),
            timeout=60).container_id

    def log(self, name: str) -> list[tuple[str, str]]:
        """The container's log as kubelet reads it: (stream, text) per CRI log line."""
        path = os.path.join(self.logdir, f"{name}.log")
        if not os.path.exists(path):
            return []
        lines = []
        with open(path) as f:
            for line in f:
                _time, stream, _tag, text = line.rstrip("\n").split(" ", 3)
                lines.append((stream, text))
        return lines


@dataclass
class Env:
    """A running containerd with the test images, seen through its CRI."""

    daemon: Any
    pb: ModuleType
    cgroup_parent: str
    pods: list[Pod] = field(default_factory=list)

    @property
    def rt(self) -> Any:
        return self.daemon.cri.rt

    def pod(self, handler: str) -> Pod:
        pb = self.pb
        n = next(_SEQ)
        logdir = tempfile.mkdtemp(prefix="ocirt-cri-logs-")
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"pod{n}", uid=f"uid-{os.getpid()}-{n}",
                                           namespace="ocirt-tests"),
            log_directory=logdir,
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER,
                                                         ipc=pb.POD))))
        pid = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config,
                                                            runtime_handler=handler),
                                    timeout=60).pod_sandbox_id
        pod = Pod(self, pid, handler, config, logdir)
        self.pods.append(pod)
        return pod

    def remove_pods(self) -> None:
        """Stop and remove the pods made by `pod()` (a test may have removed them)."""
        pb = self.pb
        while self.pods:
            pod = self.pods.pop()
            try:
                self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id),
                                       timeout=60)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                     timeout=60)
            shutil.rmtree(pod.logdir, ignore_errors=True)

    def wait_clean(self, timeout: float = 10.0) -> list[str]:
        """leftovers(), after giving the shims `timeout` seconds to finish."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def leftovers(self) -> list[str]:
        """What containers and pods left behind, as the daemon's side sees it: runtime
        state directories, and cgroups below the pods' cgroup parent."""
        r = self.daemon.in_sandbox("sh", "-c", f"ls -A {RUNTIME_ROOT} 2>/dev/null; "
                                   f"for d in /sys/fs/cgroup/{self.cgroup_parent}/*/ "
                                   f"/sys/fs/cgroup/*/{self.cgroup_parent}/*/; "
                                   '   do [ -d "$d" ] && echo "$d"; done; true')
        return r.stdout.split()


def start_env(config_path: str, ocirt_bin: str, cri_modules: tuple[ModuleType, ModuleType],
              image_archive: str) -> Env:
    """containerd reading `config_path` (adapted by configs.for_this_machine), the test
    images imported, and a cgroup parent for the pods made below our own cgroup."""
    from tests.cri.configs import for_this_machine, read
    from tests.cri.daemon import Containerd

    pb, stubs = cri_modules
    daemon = Containerd(for_this_machine(read(config_path), ocirt_bin), pb, stubs)
    parent = f"ocirt-cri-{os.getpid()}-{next(_SEQ)}"
    env = Env(daemon, pb, parent)
    try:
        daemon.start()
        r = daemon.ctr("images", "import", image_archive)
        assert r.returncode == 0, f"ctr images import: {r.stderr}"
        # kubelet makes the pods' cgroup parent; here it is the test's, in every hierarchy
        # (the sandbox's cgroup root is our own cgroup).
        # /sys/fs/cgroup itself is a hierarchy on a v2-only host, a tmpfs elsewhere.
        r = daemon.in_sandbox("sh", "-c", "for h in /sys/fs/cgroup/ /sys/fs/cgroup/*/; do "
                              'mountpoint -q "$h" && [ "$(stat -f -c %T "$h")" != tmpfs ] '
                              f'&& mkdir "$h{parent}"; done; true')
        assert r.returncode == 0, r.stderr
    except BaseException:
        stop_env(env)
        raise
    return env


def stop_env(env: Env) -> list[str]:
    """Remove what is left, stop containerd, remove the cgroup parent; returns problems."""
    problems: list[str] = []
    daemon = env.daemon
    if daemon.cri is not None and daemon.proc is not None and daemon.proc.poll() is None:
        env.remove_pods()
        left = daemon.remove_all_pods()
        problems += [f"pod {p} left" for p in left]
        problems += [f"left: {x}" for x in env.leftovers()]
    # a start that failed before the sandbox was up made no cgroup parent either
    if daemon.sandbox.proc is not None:
        parent = env.cgroup_parent
        r = daemon.in_sandbox("sh", "-c", f"for d in /sys/fs/cgroup/{parent} "
                              f"/sys/fs/cgroup/*/{parent}; do "
                              '[ -d "$d" ] && { rmdir "$d" || echo "$d"; }; done; true')
        problems += [f"cgroup not removable: {d}" for d in r.stdout.split()]
    problems += env.daemon.stop()
    return problems


@pytest.fixture(scope="module")
def cri_env_factory(ocirt_bin: str, cri_modules: Any, image_archive: str,
                    tmp_path_factory: Any) -> Iterator[Callable[[str], Env]]:
    """start(config_path) -> Env; every daemon started is stopped at the end of the
    module, and whatever it left fails the module's last test's teardown."""
    if IN_CHROOT:
        pytest.skip("containers need a real root, not a chroot (no pivot_root)")
    started: list[Env] = []

    def start(config_path: str) -> Env:
        env = start_env(config_path, ocirt_bin, cri_modules, image_archive)
        started.append(env)
        return env

    yield start
    problems: list[str] = []
    for env in started:
        problems += stop_env(env)
    assert problems == [], problems


@pytest.fixture
def pods_removed() -> Iterator[list[Env]]:
    """Tests append the Env they used; their pods are removed afterwards and nothing they
    made may be left (runtime state, cgroups)."""
    used: list[Env] = []
    yield used
    for env in used:
        env.remove_pods()
        assert env.wait_clean() == [], "left after the pods were removed"
