"""contrib/ engine snippets: they parse, name ocirt where the engines look, and (where podman
is installed) podman runs a container through ocirt with the snippet as its configuration
and gets ocirt's errors as JSON."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import tomllib

import pytest

from conformance.sandbox import Sandbox
from tests.conftest import IN_CHROOT, REPO
from tests.leaks import mounts_under, processes_naming

CONTRIB = os.path.join(REPO, "contrib")
PODMAN_DEFAULT_JSON = {"crun", "runc", "kata", "runsc", "youki", "krun"}


def load(*path: str) -> dict:
    with open(os.path.join(CONTRIB, *path), "rb") as f:
        return tomllib.load(f)


def test_podman_snippet():
    engine = load("podman", "ocirt.conf")["engine"]
    assert set(engine["runtime_supports_json"]) == PODMAN_DEFAULT_JSON | {"ocirt"}
    assert "/usr/local/bin/ocirt" in engine["runtimes"]["ocirt"]


@pytest.mark.parametrize("name", ["config.toml", "ocirt.toml"])
def test_containerd_snippets(name):
    """Both are appended to a version 2 file (tests/cri loads them into containerd)."""
    config = load("containerd", name)
    assert "version" not in config, "appended to a file that has one already"
    runtimes = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert runtimes["ocirt"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["ocirt"]["options"]["BinaryName"] == "/usr/local/bin/ocirt"


def test_crio_snippet():
    """CRI-O is not packaged for Debian 12: the drop-in is checked as TOML, as written
    and with its default-runtime lines uncommented."""
    with open(os.path.join(CONTRIB, "cri-o", "10-ocirt.conf")) as f:
        text = f.read()
    for enable_default in (False, True):
        if enable_default:
            assert text.count("#[crio.runtime]\n#default_runtime = \"ocirt\"\n") == 1
            text = text.replace("#[crio.runtime]\n#default_runtime", "[crio.runtime]\n"
                                "default_runtime")
        crio = tomllib.loads(text)["crio"]["runtime"]
        runtime = crio["runtimes"]["ocirt"]
        assert runtime["runtime_path"] == "/usr/local/bin/ocirt"
        assert runtime["runtime_type"] == "oci"
        assert runtime["runtime_root"] == "/run/ocirt"  # ocirt's default --root as root
        assert set(crio["runtimes"]) == {"ocirt"}, "a drop-in adds to CRI-O's runtimes"
        assert crio.get("default_runtime") == ("ocirt" if enable_default else None)


def test_runtimeclass_names_the_handler():
    with open(os.path.join(CONTRIB, "kubernetes", "runtimeclass.yaml")) as f:
        lines = [line.strip() for line in f if not line.startswith("#")]
    assert "handler: ocirt" in lines and "kind: RuntimeClass" in lines


def wait_for_no_process_naming(text: str, timeout: float = 20.0) -> None:
    """Wait until no process has `text` in its command line (podman's exit commands)."""
    deadline = time.monotonic() + timeout
    while processes_naming(text):
        if time.monotonic() > deadline:
            raise AssertionError(f"podman processes still name {text} after {timeout} s")
        time.sleep(0.1)


# podman's cgroupfs manager makes these below the root of every hierarchy and never
# removes them; in the sandbox "root" is our own cgroup.
PODMAN_CGROUPS = ("libpod_parent/conmon", "libpod_parent")


@pytest.fixture
def podman(tmp_path, ocirt_bin):
    """podman with the contrib snippet as its containers.conf (the binary path pointed at
    the ocirt under test), private storage, cgroupfs, no network; run in the conformance
    sandbox (a private cgroup namespace whose root is our own cgroup), so that nothing
    podman creates lands outside our cgroups, and what it leaves is removed."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed")
    if IN_CHROOT:
        pytest.skip("podman needs a real root, not a chroot")
    with open(os.path.join(CONTRIB, "podman", "ocirt.conf")) as f:
        text = f.read()
    text = text.replace('["/usr/local/bin/ocirt", "/usr/bin/ocirt"]', f'["{ocirt_bin}"]')
    assert ocirt_bin in text
    # podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long.
    short = tempfile.mkdtemp(prefix="ocirt-podman-")
    conf = tmp_path / "containers.conf"
    conf.write_text(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONTAINERS_CONF": str(conf),
           "HOME": str(tmp_path)}
    base = ["podman", "--root", str(tmp_path / "storage"), "--runroot", os.path.join(short, "run"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--runtime", "ocirt"]
    sandbox = Sandbox()
    sandbox.start()
    existing = _podman_cgroups(sandbox)

    def run(*args: str) -> subprocess.CompletedProcess:
        # This host's hard RLIMIT_NOFILE is 20000: podman's default ulimits cannot be set.
        # k8s-file: the sandbox's private /run hides journald, podman's default log
        # driver on a systemd host (so is its events backend: "file" above).
        return subprocess.run([*sandbox.prefix(), *base, "run", "--rm", "--network", "none",
                               "--log-driver", "k8s-file",
                               "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                               *args], capture_output=True, text=True, env=env, timeout=120,
                              stdin=subprocess.DEVNULL)
    try:
        yield run
        # conmon runs `podman container cleanup --runroot SHORT` after `run --rm`
        # returned; it would recreate the directory after we removed it.
        wait_for_no_process_naming(short)
        leaked = (mounts_under(str(tmp_path), sandbox.pid) + mounts_under(short, sandbox.pid)
                  + mounts_under(str(tmp_path)) + mounts_under(short))
        if not leaked:
            shutil.rmtree(short, ignore_errors=True)
        assert leaked == []
    finally:
        created = [d for d in _podman_cgroups(sandbox) if d not in existing]
        if created:
            sandbox.run(["rmdir", *created])
        left = [d for d in _podman_cgroups(sandbox) if d not in existing]
        sandbox.close()
    assert left == [], f"cgroups left by podman: {left}"


def _podman_cgroups(sandbox: Sandbox) -> list[str]:
    """The podman cgroup directories in the sandbox's hierarchies, deepest first."""
    r = sandbox.run(["sh", "-c", "for d in " + " ".join(
        f"/sys/fs/cgroup/*/{name}" for name in PODMAN_CGROUPS) +
        '; do [ -d "$d" ] && echo "$d"; done; true'])
    return r.stdout.split()


@pytest.mark.root
def test_podman_runs_ocirt_from_the_snippet(podman, bundle):
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    r = podman("--rootfs", rootfs, "sh", "-c", "echo inside; id -u; cat /proc/1/cmdline")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["inside", "0"]


@pytest.mark.root
def test_podman_gets_ocirt_errors_as_json(podman, bundle):
    """runtime_supports_json at work: podman reads ocirt's JSON log and shows the bare
    message (without it, podman shows the raw text log line)."""
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    r = podman("--rootfs", rootfs, "/no/such/program")
    assert r.returncode == 127
    assert 'exec: "/no/such/program"' in r.stderr and "no such file or directory" in r.stderr
    assert "level=error" not in r.stderr, r.stderr
