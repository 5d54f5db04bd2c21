"""The JSON schemas in schemas/ and `ocirt validate`.

What ocirt itself writes (`spec`, `features`, `state` of a real container) and what real
engines hand it (../shared/fixtures/engine-samples) must validate; broken configs must
fail with the JSON path of the problem named; the schemas must be found from an
installed (non-editable) copy too.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from conformance.bundle import default_config, write_config
from ocirt.spec import validate as v
from tests.packaging.helpers import install_copy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(REPO, "schemas")
SAMPLES = os.path.join(REPO, "..", "shared", "fixtures", "engine-samples")


def _sample_files(suffix: str) -> list[str]:
    return sorted(glob.glob(os.path.join(SAMPLES, f"*{suffix}")))


def _sample_id(path: Any) -> str:
    """A sample's file name (with no samples at all pytest passes a placeholder here,
    and test_engine_samples_are_there says what is missing)."""
    return os.path.basename(path) if isinstance(path, str) else str(path)


def _config_dir(tmp_path: Any, config: Any) -> str:
    """A directory with only a config.json: validate never needs the rootfs."""
    directory = str(tmp_path / "bundle")
    os.makedirs(directory, exist_ok=True)
    if isinstance(config, dict):
        write_config(directory, config)
    else:
        with open(os.path.join(directory, "config.json"), "w") as f:
            f.write(config)
    return directory


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# --- the schema files themselves ----------------------------------------------------------

def _schema_files() -> list[str]:
    return sorted(os.listdir(SCHEMAS))


def test_every_kind_has_its_schema_file():
    assert set(v.SCHEMA_FILES.values()) <= set(_schema_files())
    assert all(name.endswith(".schema.json") for name in _schema_files())


@pytest.mark.parametrize("name", _schema_files())
def test_schema_is_valid_draft_2020_12_and_its_refs_resolve(name):
    from jsonschema import Draft202012Validator

    with open(os.path.join(SCHEMAS, name)) as f:
        schema = json.load(f)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    refs = [node["$ref"] for node in _walk(schema) if isinstance(node.get("$ref"), str)]
    try:
        resolver = v.registry().resolver(base_uri=name)
    except ImportError:  # jsonschema < 4.18 (Debian 12): the RefResolver of validate
        legacy = v._legacy_validator(name).resolver
        for ref in refs:
            assert isinstance(legacy.resolve(ref)[1], dict), ref
        return
    for ref in refs:
        assert isinstance(resolver.lookup(ref).contents, dict), ref


@pytest.mark.parametrize("name", _schema_files())
def test_every_pattern_has_a_title_for_its_message(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        schema = json.load(f)
    untitled = [node["pattern"] for node in _walk(schema)
                if "pattern" in node and "title" not in node]
    assert untitled == []


# --- what ocirt writes validates ----------------------------------------------------------

@pytest.mark.parametrize("rootless", [False, True])
def test_ocirt_spec_output_validates(ocirt, tmp_path, rootless):
    directory = str(tmp_path)
    flags = ["--rootless"] if rootless else []
    ocirt("spec", "--bundle", directory, *flags, check=True)
    r = ocirt("validate", "--bundle", directory)
    assert (r.rc, r.out, r.err) == (0, "config.json is valid\n", "")


def test_ocirt_features_output_validates(ocirt):
    features = json.loads(ocirt("features", check=True).out)
    assert v.problems(features, "features") == []


def test_features_schema_is_closed():
    """features.md: the document MUST NOT contain properties the spec does not define."""
    doc = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0", "linux": {"sekcomp": {}}}
    assert v.problems(doc, "features") == [
        "linux: Additional properties are not allowed ('sekcomp' was unexpected)"]


@pytest.mark.root
def test_state_of_a_real_container_validates(ocirt, bundle, tmp_path):
    def annotate(cfg: dict) -> None:
        cfg["annotations"] = {"org.example.schema-test": "yes"}

    b = bundle(["sleep", "1000"], edit=annotate)
    r = ocirt("validate", "--bundle", b)
    assert (r.rc, r.out) == (0, "config.json is valid\n"), r
    pidfile = tmp_path / "pid"
    ocirt("create", "--bundle", b, "--pid-file", str(pidfile), "s1", check=True)
    pid = int(pidfile.read_text())

    created = ocirt.state("s1")
    assert v.problems(created, "state", "state") == []
    assert (created["status"], created["pid"]) == ("created", pid)
    assert created["annotations"] == {"org.example.schema-test": "yes"}
    assert created["rootfs"] == os.path.join(b, "rootfs")

    ocirt("start", "s1", check=True)
    running = ocirt.state("s1")
    assert v.problems(running, "state", "state") == []
    with open(f"/proc/{running['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"  # the host sees the state's pid run

    ocirt("kill", "s1", "KILL", check=True)
    assert ocirt.wait_status("s1", "stopped")
    stopped = ocirt.state("s1")
    assert v.problems(stopped, "state", "state") == []
    assert stopped["pid"] == 0
    ocirt("delete", "s1", check=True)


def test_state_schema_wants_a_pid_while_the_container_lives():
    state = {"ociVersion": "1.2.0", "id": "c", "pid": 0, "status": "running",
             "bundle": "/b", "rootfs": "/b/rootfs", "owner": "",
             "created": "2026-11-25T04:19:58.379055783Z"}
    assert v.problems(state, "state", "state") == ["pid: 0 is less than the minimum of 1"]
    state["status"] = "stopped"
    assert v.problems(state, "state", "state") == []
    state["created"] = "yesterday"
    assert v.problems(state, "state", "state") == [
        "created: 'yesterday' is not an RFC 3339 time such as 2026-11-25T04:19:58.379055783Z"]


# --- what engines hand us validates -------------------------------------------------------

@pytest.mark.parametrize("path", _sample_files(".config.json"), ids=_sample_id)
def test_engine_config_validates(ocirt, tmp_path, path):
    directory = str(tmp_path / "bundle")
    os.makedirs(directory)
    shutil.copy(path, os.path.join(directory, "config.json"))
    r = ocirt("validate", "--bundle", directory)
    assert (r.rc, r.out) == (0, "config.json is valid\n"), r


@pytest.mark.parametrize("path", _sample_files(".process.json"), ids=_sample_id)
def test_engine_exec_process_validates(path):
    with open(path) as f:
        assert v.problems(json.load(f), "process") == []


@pytest.mark.parametrize("path", _sample_files(".resources.json"), ids=_sample_id)
def test_engine_update_resources_validate(path):
    with open(path) as f:
        assert v.problems(json.load(f), "resources") == []


def test_engine_samples_are_there():
    """The parametrized tests above must not silently run on nothing (where the samples
    are beside the checkout at all: a user's clone has no ../shared)."""
    if not os.path.isdir(SAMPLES):
        pytest.skip("the engine samples are not here (no ../shared/fixtures/engine-samples)")
    where = f"engine samples in {os.path.normpath(SAMPLES)}"
    assert len(_sample_files(".config.json")) >= 4, where
    assert len(_sample_files(".process.json")) >= 2, where


# --- broken configs fail with the path named ----------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict], None]:
    """An edit that sets a dotted path (list indices as numbers) in the config."""
    def edit(cfg: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = cfg
        for p in parents:
            node = node[p] if not isinstance(node, dict) else node.setdefault(p, {})
        node[last] = value
    return edit


def _delete(path: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = cfg
        for p in parents:
            node = node[p]
        del node[last]
    return edit


BROKEN = [
    (_set("process.user.uid", -1), "process.user.uid: -1 is less than the minimum of 0"),
    (_set("process.user.uid", "0"), "process.user.uid: '0' is not of type 'integer'"),
    (_delete("ociVersion"), "config.json: 'ociVersion' is a required property"),
    (_set("ociVersion", "1.2"), "ociVersion: '1.2' is not a SemVer 2.0.0 version such as 1.2.0"),
    (_set("process.cwd", "tmp"), "process.cwd: 'tmp' is not an absolute path"),
    (_set("process.args", []), "process.args: [] should be non-empty"),
    (_set("process.env.0", "PATH"), "process.env[0]: 'PATH' is not of the form NAME=value"),
    (_set("process.rlimits.0.type", "NOFILE"),
     "process.rlimits[0].type: 'NOFILE' is not an RLIMIT_* name"),
    (_set("process.capabilities.bounding.0", "chown"),
     "process.capabilities.bounding[0]: 'chown' is not a capability name such as CAP_CHOWN"),
    (_set("process.oomScoreAdj", 1001),
     "process.oomScoreAdj: 1001 is greater than the maximum of 1000"),
    (_delete("mounts.0.destination"), "mounts[0]: 'destination' is a required property"),
    (_set("mounts.0.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]),
     "mounts[0]: 'gidMappings' is a dependency of 'uidMappings'"),
    (_set("annotations", {"io.example.cri-o": 1}),
     "annotations[\"io.example.cri-o\"]: 1 is not of type 'string'"),
    (_set("hooks.poststop", [{"path": "/bin/true", "timeout": 0}]),
     "hooks.poststop[0].timeout: 0 is less than the minimum of 1"),
    (_set("linux.namespaces.0.type", "pidns"),
     "linux.namespaces[0].type: 'pidns' is not one of ['pid', 'network', 'mount', 'ipc', "
     "'uts', 'user', 'cgroup', 'time']"),
    (_set("linux.uidMappings", [{"containerID": 0, "hostID": 0, "size": 2**32}]),
     "linux.uidMappings[0].size: 4294967296 is greater than the maximum of 4294967295"),
    (_set("linux.timeOffsets", {"realtime": {"secs": 1}}),
     "linux.timeOffsets: 'realtime' is not one of ['monotonic', 'boottime']"),
    (_set("linux.devices", [{"type": "c", "path": "/dev/x", "major": 1}]),
     "linux.devices[0]: 'minor' is a required property"),
    (_set("linux.resources.blockIO", {"weightDevice": [{"major": 8, "minor": 0}]}),
     "linux.resources.blockIO.weightDevice[0]: needs at least one of 'weight', 'leafWeight'"),
    (_set("linux.resources.hugepageLimits", [{"pageSize": "2mb", "limit": 1}]),
     "linux.resources.hugepageLimits[0].pageSize: '2mb' is not a page size such as 64KB, "
     "2MB or 1GB"),
    (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                          "args": [{"index": 6, "value": 0,
                                                    "op": "SCMP_CMP_EQ"}]}]}),
     "linux.seccomp.syscalls[0].args[0].index: 6 is greater than the maximum of 5"),
    (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_DENY"}),
     "linux.seccomp.defaultAction: 'SCMP_ACT_DENY' is not one of ['SCMP_ACT_KILL', "
     "'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', "
     "'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_NOTIFY']"),
    (_set("linux.netDevices", {"eth0": {"name": "a/b"}}),
     "linux.netDevices.eth0.name: 'a/b' is not a network interface name (1 to 15 bytes, "
     "no '/', ':' or white space)"),
    (_set("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "0-x"}),
     "linux.memoryPolicy.nodes: '0-x' is not a NUMA node list such as 0-3,7"),
    (_set("linux.memoryPolicy", {"mode": "INTERLEAVE"}),
     "linux.memoryPolicy.mode: 'INTERLEAVE' is not one of ['MPOL_DEFAULT', 'MPOL_BIND', "
     "'MPOL_INTERLEAVE', 'MPOL_WEIGHTED_INTERLEAVE', 'MPOL_PREFERRED', 'MPOL_PREFERRED_MANY', "
     "'MPOL_LOCAL']"),
    (_set("linux.memoryPolicy", {"nodes": "0"}),
     "linux.memoryPolicy: 'mode' is a required property"),
    (_set("linux.intelRdt", {"schemata": ["L3:0=f\nMB:0=1"]}),
     "linux.intelRdt.schemata[0]: 'L3:0=f\\nMB:0=1' is not a single line"),
    (_set("linux.intelRdt", {"enableMonitoring": 1}),
     "linux.intelRdt.enableMonitoring: 1 is not of type 'boolean'"),
    (_set("linux.personality", {"domain": "LINUX64"}),
     "linux.personality.domain: 'LINUX64' is not one of ['LINUX', 'LINUX32']"),
]


@pytest.mark.parametrize("edit,line", BROKEN, ids=[line.split(":")[0] for _, line in BROKEN])
def test_broken_config_names_the_path(edit, line):
    cfg = default_config()
    edit(cfg)
    assert v.problems(cfg, "config", "config.json") == [line]


def test_validate_cli_prints_every_problem_sorted_and_exits_1(ocirt, tmp_path):
    cfg = default_config()
    cfg["process"]["user"]["uid"] = -1
    cfg["linux"]["namespaces"].append({"type": "pidns"})
    del cfg["ociVersion"]
    r = ocirt("validate", "--bundle", _config_dir(tmp_path, cfg))
    index = len(cfg["linux"]["namespaces"]) - 1
    assert r.rc == 1, r
    assert r.out.splitlines() == [
        "config.json: 'ociVersion' is a required property",
        f"linux.namespaces[{index}].type: 'pidns' is not one of ['pid', 'network', 'mount', "
        "'ipc', 'uts', 'user', 'cgroup', 'time']",
        "process.user.uid: -1 is less than the minimum of 0",
    ]
    assert "Traceback" not in r.err


def test_runtime_spec_1_3_examples_validate():
    """config-linux.md's v1.3.0 examples of intelRdt and memoryPolicy."""
    cfg = default_config()
    cfg["linux"]["intelRdt"] = {"closID": "guaranteed_group",
                                "schemata": ["L3:0=7f0;1=1f", "L2:0=f;1=f;2=f;3=f",
                                             "MB:0=20;1=70"], "enableMonitoring": True}
    cfg["linux"]["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "2-3",
                                    "flags": ["MPOL_F_STATIC_NODES"]}
    assert v.problems(cfg, "config") == []


def test_unknown_properties_are_ignored():
    """config.md, Extensibility: runtimes MUST ignore unknown properties."""
    cfg = default_config()
    cfg["org.example.vendor"] = {"anything": [1, 2]}
    cfg["linux"]["futureKnob"] = True
    cfg["process"]["user"]["futureField"] = "x"
    assert v.problems(cfg, "config") == []


def test_fifo_device_needs_no_major_minor():
    cfg = default_config()
    cfg["linux"]["devices"] = [{"type": "p", "path": "/dev/fifo"}]
    assert v.problems(cfg, "config") == []


def test_top_level_must_be_an_object(ocirt, tmp_path):
    r = ocirt("validate", "--bundle", _config_dir(tmp_path, "[]"))
    assert (r.rc, r.out) == (1, "config.json: [] is not of type 'object'\n"), r


def test_missing_config_and_bundle_are_one_line_errors(ocirt, tmp_path):
    r = ocirt("validate", "--bundle", str(tmp_path))
    assert r.rc == 1 and "JSON specification file config.json not found" in r.err, r
    r = ocirt("validate", "--bundle", str(tmp_path / "nonexistent"))
    assert r.rc == 1 and "no such file or directory" in r.err, r
    assert len(r.err.strip().splitlines()) == 1


def test_malformed_json_is_a_one_line_error(ocirt, tmp_path):
    r = ocirt("validate", "--bundle", _config_dir(tmp_path, "{"))
    assert r.rc == 1 and "invalid JSON" in r.err and "internal error" not in r.err, r


def test_validate_defaults_to_the_current_directory(ocirt, tmp_path):
    directory = _config_dir(tmp_path, default_config())
    r = ocirt("validate", cwd=directory)
    assert (r.rc, r.out) == (0, "config.json is valid\n"), r


# --- cost and packaging ------------------------------------------------------------------

def test_jsonschema_stays_off_the_container_path():
    """create/start/state/kill/delete must never pay for importing jsonschema (~70 ms)."""
    code = ("import sys, ocirt.cli, ocirt.cli.lifecycle, ocirt.runtime.create, "
            "ocirt.runtime.start, ocirt.spec.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jsonschema', 'referencing', 'ocirt.spec.validate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_schemas_found_in_a_non_editable_install(tmp_path):
    """A real (non-editable) install of a copy of the tree: the schemas come as data files
    under <prefix>/share/ocirt/schemas and `ocirt validate` finds them there."""
    prefix, site = install_copy(tmp_path)
    env = dict(os.environ, PYTHONPATH=site)
    where = subprocess.run(
        [sys.executable, "-c", "import ocirt.spec.validate as v; print(v.__file__); "
         "print(v.schema_dir())"], capture_output=True, text=True, env=env, cwd=str(tmp_path),
        check=True).stdout.split()
    assert where == [os.path.join(site, "ocirt", "spec", "validate.py"),
                     str(prefix / "share" / "ocirt" / "schemas")]

    bad = default_config()
    bad["process"]["user"]["uid"] = -1
    for cfg, rc, out in ((default_config(), 0, "config.json is valid\n"),
                         (bad, 1, "process.user.uid: -1 is less than the minimum of 0\n")):
        directory = str(tmp_path / f"bundle{rc}")
        os.makedirs(directory)
        write_config(directory, copy.deepcopy(cfg))
        r = subprocess.run([str(prefix / "bin" / "ocirt"), "validate", "--bundle", directory],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path))
        assert (r.returncode, r.stdout) == (rc, out), r.stderr


def test_validate_reports_what_create_refuses_before_any_schema(ocirt, tmp_path):
    """A NUL byte or nesting too deep passes the schema but not `create`: say so."""
    cfg = default_config()
    cfg["process"]["args"] = ["sh\0"]
    cfg["x-vendor"] = {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    r = ocirt("validate", "--bundle", _config_dir(tmp_path, cfg))
    assert r.rc == 1 and r.out == "process.args[0]: contains a NUL byte\n", r
    cfg["process"]["args"] = ["sh"]
    r = ocirt("validate", "--bundle", _config_dir(tmp_path, cfg))
    assert r.rc == 1 and r.out.startswith('["x-vendor"].deep[0]') and \
        r.out.endswith(": nested more than 64 levels deep\n"), r
