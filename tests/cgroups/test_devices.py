"""Device rules: v1 semantics, the v1 write plan, and the eBPF filter checked through the
interpreter against the v1 decision (no root); as root, the filter attached for real to
a cgroup of the unified mount."""

from __future__ import annotations

import itertools
import os
import random
import struct
import subprocess

import pytest

from ocirt.cgroups import bpf
from ocirt.cgroups.detect import detect
from ocirt.cgroups.devices import (
    DeviceState,
    default_rules,
    emulate,
    parse_list,
    write_plan,
)
from ocirt.cgroups.resources import DeviceRule
from ocirt.errors import ConfigError
from ocirt.spec.plan import Device
from tests.cgroups import bpf_interp


def allow(kind="a", major=-1, minor=-1, access="rwm"):
    return DeviceRule(True, kind, major, minor, access)


def deny(kind="a", major=-1, minor=-1, access="rwm"):
    return DeviceRule(False, kind, major, minor, access)


def test_podman_deny_all_plus_defaults():
    """podman sends only a deny-all rule: runc's defaults keep /dev/null & co usable."""
    state = emulate([deny()] + default_rules())
    assert not state.default_allow
    assert state.allows("c", 1, 3, "rw")  # /dev/null
    assert state.allows("c", 136, 4, "rw")  # a pty
    assert state.allows("b", 8, 0, "m")  # mknod of anything
    assert not state.allows("b", 8, 0, "r")  # but not opening a disk
    assert not state.allows("c", 10, 229, "r")  # /dev/fuse
    plan = write_plan(state)
    assert plan[0] == ("devices.deny", "a")
    assert plan[1:4] == [("devices.allow", "c *:* m"), ("devices.allow", "b *:* m"),
                         ("devices.allow", "c 1:3 rwm")]


def test_rules_keep_their_order():
    """devices.list must show the rules in the order given (runtime-spec; runc sorts)."""
    rules = [deny(), allow("c", 10, 229, "rwm"), allow("b", 8, 20, "rw"), allow("b", 10, 200, "r")]
    lines = [line for _, line in write_plan(emulate(rules + default_rules()))[1:4]]
    assert lines == ["c 10:229 rwm", "b 8:20 rw", "b 10:200 r"]


def test_allow_all_and_deny_exceptions():
    state = emulate([allow(), deny("c", 1, 3, "w")])
    assert state.default_allow
    assert state.allows("c", 1, 3, "r")
    assert not state.allows("c", 1, 3, "w")
    assert not state.allows("c", 1, 3, "rw")  # v1: any denied letter denies the access
    assert write_plan(state) == [("devices.allow", "a"), ("devices.deny", "c 1:3 w")]


def test_later_rules_take_access_back():
    state = emulate([deny(), allow("c", 1, 3, "rwm"), deny("c", 1, 3, "w")])
    assert state.exceptions == {("c", 1, 3): "rm"}
    state = emulate([deny(), allow("c", 1, 3, "rw"), allow("c", 1, 3, "m")])
    assert state.exceptions == {("c", 1, 3): "rwm"}
    state = emulate([allow("c", 1, 3, "r"), deny()])  # a later "a" rule resets everything
    assert state.exceptions == {} and not state.default_allow


def test_punching_a_hole_in_a_wildcard_is_refused():
    with pytest.raises(ConfigError, match="punch a hole"):
        emulate([deny(), allow("c", -1, -1, "rwm"), deny("c", 1, 3, "r")])
    with pytest.raises(ConfigError, match="punch a hole"):
        emulate([allow(), deny("b", 8, -1, "w"), allow("b", 8, 0, "w")])


def test_default_rules_drop_a_node_the_config_replaces():
    rules = default_rules([Device("/dev/null", "c", 1, 3, 0o666, 0, 0)])
    assert allow("c", 1, 3, "rwm") in rules
    rules = default_rules([Device("/dev/null", "c", 42, 0, 0o666, 0, 0)])
    assert allow("c", 1, 3, "rwm") not in rules
    assert allow("c", 1, 5, "rwm") in rules


def test_parse_devices_list():
    assert parse_list("a *:* rwm\n").default_allow
    state = parse_list("c 1:3 rwm\nb *:* m\nc 136:* rw\n")
    assert state.exceptions == {("c", 1, 3): "rwm", ("b", -1, -1): "m", ("c", 136, -1): "rw"}


# --- the eBPF program -----------------------------------------------------------------------

def test_assembler_encoding():
    code = bpf.assemble([bpf.load_word(2, 1, 4), bpf.alu32(bpf.AND, 2, 0xFFFF),
                         bpf.jump32(bpf.JNE, 2, 7, "out"), bpf.alu32(bpf.MOV, 0, 1),
                         bpf.exit_(), bpf.alu32(bpf.MOV, 0, 0).at("out"), bpf.exit_()])
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    assert insns[0] == (0x61, 0x12, 4, 0)  # ldxw r2, [r1+4]
    assert insns[1] == (0x54, 0x02, 0, 0xFFFF)  # w2 &= 0xffff
    assert insns[2] == (0x56, 0x02, 2, 7)  # if w2 != 7 goto +2
    assert insns[4] == (0x95, 0, 0, 0)  # exit
    with pytest.raises(ValueError, match="undefined label"):
        bpf.assemble([bpf.jump32(bpf.JNE, 2, 7, "nowhere")])


def test_interpreter_refuses_what_the_verifier_would():
    with pytest.raises(bpf_interp.BPFFault):
        bpf_interp.run(bpf.assemble([bpf.load_word(2, 1, 12), bpf.exit_()]), bytes(12))
    with pytest.raises(bpf_interp.BPFFault):
        bpf_interp.run(bpf.assemble([bpf.alu32(bpf.MOV, 0, 1)]), bytes(12))  # runs off the end
    with pytest.raises(bpf_interp.BPFFault):
        bpf_interp.run(b"\x00" * 7, bytes(12))


ACCESSES = ["r", "w", "m", "rw", "rm", "wm", "rwm"]
PROBES = [(kind, major, minor) for kind in "bc" for major in (1, 5, 8, 136)
          for minor in (0, 3, 5)]


def _check_program(state: DeviceState) -> None:
    code = bpf.compile_state(state)
    for (kind, major, minor), access in itertools.product(PROBES, ACCESSES):
        assert bpf_interp.decide(code, kind, major, minor, access) == \
            state.allows(kind, major, minor, access), (state.exceptions, kind, major, minor,
                                                       access)


def test_program_matches_v1_for_the_defaults():
    _check_program(emulate([deny()] + default_rules()))
    _check_program(emulate([allow()]))
    _check_program(emulate([]))


def test_program_matches_v1_for_random_rule_sets():
    rnd = random.Random(1234)
    checked = 0
    while checked < 60:
        rules = [allow() if rnd.random() < 0.5 else deny()]
        for _ in range(rnd.randint(0, 6)):
            rules.append(DeviceRule(rnd.random() < 0.5, rnd.choice("bc"),
                                    rnd.choice((-1, 1, 8, 136)), rnd.choice((-1, 0, 3, 5)),
                                    rnd.choice(ACCESSES)))
        try:
            state = emulate(rules)
        except ConfigError:
            continue
        _check_program(state)
        checked += 1


# --- for real, as root: the program attached to a cgroup of the unified mount ---------------

def _unified_own_dir() -> str | None:
    layout = detect()
    return layout.unified.own_dir() if layout.unified is not None else None


@pytest.mark.root
def test_filter_is_enforced_by_the_kernel(tmp_path):
    own = _unified_own_dir()
    if own is None:
        pytest.skip("no cgroup2 hierarchy")
    cgroup = os.path.join(own, f"ocirt-test-bpf-{os.getpid()}")
    os.mkdir(cgroup)
    try:
        state = emulate([deny(), allow("c", 1, 3, "r"), allow("c", 1, 5, "rw")])
        try:
            bpf.attach(cgroup, bpf.compile_state(state))
        except OSError as exc:
            pytest.skip(f"the kernel refuses device programs here: {exc}")
        assert bpf.attached_count(cgroup) == 1
        bpf.attach(cgroup, bpf.compile_state(state))  # replacing keeps exactly one
        assert bpf.attached_count(cgroup) == 1
        # (no 2>/dev/null: opening /dev/null for writing is what is denied)
        script = ("cat /dev/null && echo NULL-READ; "
                  "(echo x >/dev/null) && echo NULL-WRITE; "
                  "head -c1 /dev/zero | od -An -tx1; "
                  "head -c1 /dev/urandom >/dev/zero && echo URANDOM")

        def enter() -> None:  # the new child joins the test cgroup before exec
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        out = subprocess.run(["sh", "-c", script], preexec_fn=enter, capture_output=True,
                             text=True, timeout=30).stdout
        assert "NULL-READ" in out
        assert "NULL-WRITE" not in out
        assert "00" in out  # /dev/zero readable
        assert "URANDOM" not in out
    finally:
        os.rmdir(cgroup)
