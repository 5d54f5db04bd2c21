"""linux.netDevices: a host interface moved (and renamed) into the container with its
permanent addresses, up; errors name the device; a failed create puts it back.

Each case runs ocirt inside a network namespace the test makes (`unshare --net`), with a
veth pair created there: the machine's own interfaces are never touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import IN_CHROOT
from tests.leaks import assert_nothing_left

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
              pytest.mark.skipif(IN_CHROOT, reason="network namespaces need a real root")]

# A veth pair (this kernel has no dummy driver): d0 is moved, its peer p0 stays behind.
SETUP = ("ip link add d0 type veth peer name p0 && ip addr add 10.99.0.7/24 dev d0 && "
         "ip addr add fd00:99::7/64 dev d0 nodad && ip link set p0 up && ip link set d0 up")


def in_private_netns(script: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """`script` (bash) in a fresh network namespace holding the device d0."""
    return subprocess.run(["unshare", "--net", "--", "bash", "-c", f"{SETUP} && {script}"],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def netdev_bundle(bundle, devices, args):
    return bundle(args, edit=lambda c: c["linux"].update(netDevices=devices))


def test_moved_renamed_with_addresses_and_up(ocirt, bundle):
    b = netdev_bundle(bundle, {"d0": {"name": "ctr0"}},
                      ["sh", "-c", "ip -o addr show dev ctr0; ip -o link show dev ctr0; "
                                   "echo ifaces: $(ls /sys/class/net)"])
    rt = " ".join(ocirt.cmd("run", "--bundle", b, "c1"))
    r = in_private_netns(f"{rt}; echo rc=$?; ip link show d0 >/dev/null 2>&1 || echo GONE")
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    assert "inet 10.99.0.7/24" in r.stdout and "inet6 fd00:99::7/64" in r.stdout
    link = next(line for line in r.stdout.splitlines() if "ctr0" in line and "<" in line)
    assert ",UP" in link or "<UP" in link, link
    ifaces = next(line for line in r.stdout.splitlines() if line.startswith("ifaces:"))
    assert sorted(ifaces.split()[1:]) == ["ctr0", "lo"], ifaces
    # The container's namespace died with it, and a virtual device goes with its namespace.
    assert "GONE" in r.stdout


def test_host_no_longer_has_it_while_the_container_runs(ocirt, bundle):
    b = netdev_bundle(bundle, {"d0": {}}, ["sleep", "1000"])
    create = " ".join(ocirt.cmd("run", "-d", "--bundle", b, "c1"))
    delete = " ".join(ocirt.cmd("delete", "--force", "c1"))
    r = in_private_netns(f"{create} && (ip link show d0 >/dev/null 2>&1 && echo HOST || "
                         f"echo MOVED); {delete}")
    assert r.stdout.split() == ["MOVED"], r.stdout + r.stderr


def test_missing_device_is_a_clear_error(ocirt, bundle):
    b = netdev_bundle(bundle, {"nosuch0": {}}, ["true"])
    rt = " ".join(ocirt.cmd("create", "--bundle", b, "c1"))
    r = in_private_netns(rt)
    assert r.returncode == 1, r
    assert "linux.netDevices: network device 'nosuch0' not found on the host" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert_nothing_left(ocirt.root, "c1", b)


def test_no_network_namespace_is_refused(ocirt, bundle):
    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
        c["linux"]["netDevices"] = {"d0": {}}
    r = ocirt("create", "--bundle", bundle(["true"], edit=edit), "c1")
    assert r.rc == 1 and "unable to move network devices without a NET namespace" in r.err


@pytest.mark.parametrize("failure", ["second device missing", "process fails later"])
def test_failed_create_puts_the_device_back(ocirt, bundle, failure):
    """The device returns to the host under its own name, with its addresses, up."""
    if failure == "second device missing":
        b = netdev_bundle(bundle, {"d0": {"name": "ctr0"}, "nosuch0": {}}, ["true"])
    else:
        b = netdev_bundle(bundle, {"d0": {"name": "ctr0"}}, ["/no/such/program"])
    rt = " ".join(ocirt.cmd("create", "--bundle", b, "c1"))
    r = in_private_netns(f"{rt}; echo rc=$?; ip -o addr show dev d0; ip -o link show dev d0")
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    assert "inet 10.99.0.7/24" in r.stdout and "inet6 fd00:99::7/64" in r.stdout, r.stdout
    link = r.stdout.splitlines()[-1]
    assert "d0@p0: <" in link and ",UP" in link, f"the device is not up again: {link}"
    assert_nothing_left(ocirt.root, "c1", b)


def test_features_report_net_devices(ocirt):
    features = json.loads(ocirt("features", check=True).out)
    assert features["linux"]["netDevices"] == {"enabled": True}


def test_pyroute2_stays_off_the_container_path():
    """pyroute2 (~0.1 s to import) is loaded only for configs that move devices."""
    code = ("import sys, ocirt.cli, ocirt.cli.lifecycle, ocirt.runtime.create, "
            "ocirt.runtime.start, ocirt.runtime.netdev, ocirt.process.init; "
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
