"""Fuzzing the config.json / process.json planner: every input is either turned into a
Plan that satisfies the kernel's limits, or refused with the project's one-line user
error (OcirtError), never another exception or a hang. Runs without root."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.bundle import default_config
from ocirt import jsonio
from ocirt.cgroups import resources
from ocirt.errors import OcirtError
from ocirt.seccomp import profile
from ocirt.spec import plan as planner
from ocirt.spec.load import load_config, read_json_file
from tests.fuzz.strategies import mutated, no_hang


def _rich_config() -> dict:
    """The conformance default config with every section the planner checks filled in,
    so that mutations land next to each check."""
    cfg = default_config(["sh", "-c", "true"])
    proc = cfg["process"]
    proc.update(consoleSize={"height": 24, "width": 80}, oomScoreAdj=0,
                ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4},
                scheduler={"policy": "SCHED_OTHER", "nice": 0},
                execCPUAffinity={"initial": "0", "final": "0-1"})
    proc["user"].update(additionalGids=[1, 2], umask=0o22)
    linux = cfg["linux"]
    linux["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                         "fileMode": 0o666, "uid": 0, "gid": 0}]
    linux["resources"] = {
        "memory": {"limit": 1 << 30, "reservation": 1 << 29},
        "cpu": {"shares": 1024, "quota": 100000, "period": 100000, "cpus": "0-1"},
        "pids": {"limit": 100},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
        "blockIO": {"weight": 100, "throttleReadBpsDevice": [
            {"major": 8, "minor": 0, "rate": 1000}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "unified": {"memory.high": "max"},
    }
    linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                      "errnoRet": 1, "args": [{"index": 1, "value": 0,
                                                               "op": "SCMP_CMP_NE"}]}]}
    linux["sysctl"] = {"kernel.domainname": "example.org"}
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    cfg["annotations"] = {"org.example": "x"}
    return cfg


BASE = _rich_config()
BASE_PROCESS = BASE["process"]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fuzz-bundle"))


def _one_line(exc: OcirtError) -> None:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    assert "internal error" not in text and "Traceback" not in text, text


def _plan_or_refusal(spec, bundle_dir: str):
    try:
        plan = planner.build_plan(spec, bundle_dir)
    except OcirtError as exc:
        _one_line(exc)
        return None
    _check_plan(plan)
    # The stages `create` runs on the plan next, and the state file it writes.
    for stage in (lambda: resources.parse(plan.resources), lambda: profile.parse(plan.seccomp)):
        try:
            stage()
        except OcirtError as exc:
            _one_line(exc)
    jsonio.dumps(spec).encode("utf-8")
    return plan


def _check_plan(plan) -> None:
    """What the kernel interfaces behind the plan can take."""
    for dev in plan.devices:
        assert 0 <= dev.major <= planner.MAX_MAJOR and 0 <= dev.minor <= planner.MAX_MINOR
        assert "\0" not in dev.path
    _check_process(plan.process)
    for hooks in plan.hooks.values():
        for hook in hooks:
            assert 0 < hook.get("timeout", 1) <= planner.INT32_MAX
            assert "\0" not in hook["path"]
    for m in plan.mounts:
        for text in (m.source, m.destination, m.fstype, m.data):
            assert "\0" not in text
            text.encode("utf-8")
    for path in plan.masked_paths + plan.readonly_paths + [plan.rootfs]:
        assert "\0" not in path
        path.encode("utf-8")


def _check_process(proc) -> None:
    assert len(proc.additional_gids) <= planner.NGROUPS_MAX
    for text in [*proc.args, *proc.env, proc.cwd, proc.apparmor, proc.selinux_label]:
        assert "\0" not in text
        text.encode("utf-8")
    for _res, soft, hard in proc.rlimits:
        assert 0 <= soft < 1 << 64 and 0 <= hard < 1 << 64
    if proc.cpu_affinity:
        for text in proc.cpu_affinity:
            if text:
                assert max(planner.parse_cpu_list(text, "x")) < planner.MAX_CPUS


def test_base_config_is_accepted(bundle_dir):
    """The properties below start from a valid document (or they test nothing)."""
    assert _plan_or_refusal(BASE, bundle_dir) is not None
    assert planner.build_process(BASE_PROCESS, "process").args == ["sh", "-c", "true"]


@given(spec=mutated(BASE))
def test_config_is_planned_or_refused_in_one_line(spec, bundle_dir):
    with no_hang():
        _plan_or_refusal(spec, bundle_dir)


@given(proc=mutated(BASE_PROCESS))
def test_process_json_is_planned_or_refused_in_one_line(proc):
    with no_hang():
        try:
            _check_process(planner.build_process(proc, "process"))
        except OcirtError as exc:
            _one_line(exc)


@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_json_bytes_parse_or_refuse(data, tmp_path_factory):
    with no_hang():
        try:
            jsonio.loads(data)
        except ValueError as exc:
            assert "\n" not in str(exc)


@given(edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 2),
                                st.sampled_from(list('{}[]",:\\0-ex\x00\xff') + ["\\u0000",
                                                "\\ud800", "1e999", "9" * 5000, "[" * 5000])),
                      min_size=1, max_size=6))
def test_edited_config_text_is_read_or_refused(edits, bundle_dir):
    """config.json edited as text (broken syntax, escapes, huge numbers) through the
    same path `create` reads it."""
    text = json.dumps(BASE)
    for pos, kind, piece in edits:
        pos %= len(text) + 1
        if kind == 0:
            text = text[:pos] + piece + text[pos:]
        elif kind == 1:
            text = text[:pos] + text[pos + len(piece):]
        else:
            text = text[:pos] + piece + text[pos + len(piece):]
    with open(os.path.join(bundle_dir, "config.json"), "w", encoding="utf-8",
              errors="surrogateescape") as f:
        f.write(text)
    with no_hang():
        try:
            spec = load_config(bundle_dir)
        except OcirtError as exc:
            _one_line(exc)
            return
        _plan_or_refusal(spec, bundle_dir)


def test_read_json_file_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with no_hang(5), pytest.raises(OcirtError, match="not a regular file"):
        read_json_file(fifo, "config.json")
    with no_hang(5), pytest.raises(OcirtError, match="invalid JSON"):
        read_json_file(fifo, "process.json", regular_only=False)  # no writer: empty
