"""linux.memoryPolicy (runtime-spec 1.3): set_mempolicy(2) before exec, for the init and
for `exec`; seen from inside (/proc/self/numa_maps) and from the host
(/proc/<pid>/numa_maps of the container's process); bad input is a one-line error naming
the field, and a policy the kernel refuses leaves nothing behind.

The kernel shows a task's policy on every mapping without a policy of its own, so the
first line of numa_maps (the program's text) carries it: `bind=static:0`, `interleave:0`,
`prefer=relative:0`, `default`. Node 0 always exists; node 1000 never does here.
"""

from __future__ import annotations

import os

import pytest

from conformance.runner import wait_for
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

# MPOL_WEIGHTED_INTERLEAVE came with Linux 6.9, and with it this directory.
HAS_WEIGHTED_INTERLEAVE = os.path.isdir("/sys/kernel/mm/mempolicy/weighted_interleave")
FIRST_POLICY = ["sh", "-c", "head -n 1 /proc/self/numa_maps | cut -d ' ' -f 2"]


def policy_bundle(bundle, policy, args=FIRST_POLICY):
    return bundle(args, edit=lambda cfg: cfg["linux"].update(memoryPolicy=policy))


def host_policy(pid: int) -> str:
    """The policy field of the first mapping of `pid`, read from the host."""
    with open(f"/proc/{pid}/numa_maps") as f:
        return f.readline().split()[1]


@pytest.mark.parametrize("policy, shown", [
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, "interleave:0"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "bind=static:0"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]},
     "bind=balancing:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES"]},
     "prefer=relative:0"),
    ({"mode": "MPOL_PREFERRED"}, "local"),  # no node: local allocation
    ({"mode": "MPOL_PREFERRED_MANY", "nodes": "0"}, "prefer"),  # "prefer (many):0"
    ({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0"}, "weighted"),
    ({"mode": "MPOL_LOCAL"}, "local"),
    ({"mode": "MPOL_DEFAULT"}, "default"),
])
def test_the_process_runs_under_the_policy(ocirt, bundle, policy, shown):
    r = ocirt("run", "--bundle", policy_bundle(bundle, policy), "c1")
    if policy["mode"] == "MPOL_WEIGHTED_INTERLEAVE" and not HAS_WEIGHTED_INTERLEAVE:
        # Before Linux 6.9 the mode does not exist: set_mempolicy refuses it, in one line.
        assert r.rc == 1 and len(r.err.splitlines()) == 1, r
        assert "linux.memoryPolicy" in r.err and "invalid argument" in r.err, r
        return
    assert r.rc == 0, r
    assert r.out.strip() == shown, r


def test_host_sees_the_policy_of_the_init_and_of_exec(ocirt, bundle):
    b = policy_bundle(bundle, {"mode": "MPOL_BIND", "nodes": "0",
                               "flags": ["MPOL_F_STATIC_NODES"]}, ["sleep", "1000"])
    assert ocirt("run", "-d", "--bundle", b, "c1").rc == 0
    pid = ocirt.state("c1")["pid"]
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe").endswith("busybox"), 5)
    assert host_policy(pid) == "bind=static:0"
    # An exec'd process gets the same policy (runc sets it in its setns init too).
    r = ocirt("exec", "c1", *FIRST_POLICY)
    assert r.rc == 0, r
    assert r.out.strip() == "bind=static:0"
    # The runtime's own processes were never under it: this test's process is not.
    assert host_policy(os.getpid()) == "default"


def test_without_a_policy_the_process_has_the_default(ocirt, bundle):
    r = ocirt("run", "--bundle", bundle(FIRST_POLICY), "c1")
    assert r.rc == 0, r
    assert r.out.strip() == "default"


@pytest.mark.parametrize("policy, message", [
    ({}, "linux.memoryPolicy.mode: invalid memory policy mode ''"),
    ({"mode": "INTERLEAVE", "nodes": "0"},
     "linux.memoryPolicy.mode: invalid memory policy mode 'INTERLEAVE'"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_RELATIVE_NODES", "badflag"]},
     "linux.memoryPolicy.flags[1]: invalid memory policy flag 'badflag'"),
    ({"mode": "MPOL_DEFAULT", "nodes": "0-7"},
     "linux.memoryPolicy.nodes: memory policy mode MPOL_DEFAULT requires 0 nodes but got 8"),
    ({"mode": "MPOL_BIND", "nodes": ""},
     "linux.memoryPolicy.nodes: memory policy mode MPOL_BIND requires at least one node"),
    ({"mode": "MPOL_BIND", "nodes": "0-9876543210"},
     "linux.memoryPolicy.nodes: node 9876543210 is beyond the kernel's limit of 1024 nodes"),
    ({"mode": "MPOL_BIND", "nodes": "0,x"}, "linux.memoryPolicy.nodes: invalid node list"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES",
                                                   "MPOL_F_RELATIVE_NODES"]},
     "linux.memoryPolicy.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude"),
    ({"mode": "MPOL_BIND", "nodes": 0}, "linux.memoryPolicy.nodes: must be a string"),
])
def test_bad_policy_is_a_one_line_error_naming_the_field(ocirt, bundle, state_root, policy,
                                                         message):
    b = policy_bundle(bundle, policy)
    r = ocirt("run", "--bundle", b, "c1")
    assert r.rc == 1, r
    assert message in r.err, r
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err
    assert_nothing_left(state_root, "c1", b)


def test_policy_the_kernel_refuses_fails_create_and_leaves_nothing(ocirt, bundle, state_root):
    # Node 1000 is below the kernel's limit but not online; MPOL_F_NUMA_BALANCING does not
    # go with MPOL_PREFERRED. Both reach set_mempolicy, in the init, before exec.
    for policy in ({"mode": "MPOL_BIND", "nodes": "1000"},
                   {"mode": "MPOL_PREFERRED", "nodes": "0",
                    "flags": ["MPOL_F_NUMA_BALANCING"]}):
        b = policy_bundle(bundle, policy, ["sleep", "1000"])
        r = ocirt("create", "--bundle", b, "c1")
        assert r.rc == 1, r
        assert "linux.memoryPolicy: set_mempolicy MPOL_" in r.err, r
        assert "invalid argument" in r.err, r
        assert "Traceback" not in r.err
        assert_nothing_left(state_root, "c1", b)
