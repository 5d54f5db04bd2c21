"""The CLI as engines see it: exit codes, messages, --log files (no container needed)."""

from __future__ import annotations

import json
import os
import re
import subprocess

from conformance.runner import Runtime

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_version_looks_like_runcs(ocirt_bin):
    out = subprocess.run([ocirt_bin, "--version"], capture_output=True, text=True, check=True)
    first = out.stdout.splitlines()[0]
    assert re.match(r"^ocirt version \d+\.\d+\.\d+", first)
    assert re.search(r"^spec: 1\.\d+\.\d+", out.stdout, re.M)
    assert subprocess.run([ocirt_bin, "-v"], capture_output=True).returncode == 0


def test_missing_container(ocirt):
    for args in (["state", "x"], ["kill", "x"], ["delete", "x"], ["start", "x"]):
        r = ocirt(*args)
        assert r.rc == 1 and "container does not exist" in r.err, (args, r)
    assert ocirt("delete", "--force", "x").rc == 0


def test_unknown_command_exits_3(ocirt):
    r = ocirt("frobnicate")
    assert r.rc == 3 and "No help topic for 'frobnicate'" in r.err


def test_usage_errors_exit_1_with_help(ocirt):
    r = ocirt("kill")
    assert r.rc == 1 and "Incorrect Usage" in r.err and "USAGE:" in r.err


def test_invalid_ids_are_refused_before_any_path(ocirt, tmp_path):
    for bad in ("../escape", "a/b", "..", ".", "sp ace", "x\ny"):
        r = ocirt("create", "--bundle", str(tmp_path), bad)
        assert r.rc == 1 and "invalid container ID format" in r.err, (bad, r)
    assert not os.path.exists(os.path.join(ocirt.root, "..", "escape"))
    r = ocirt("create", "--bundle", str(tmp_path), "")
    assert r.rc == 1 and "container id cannot be empty" in r.err


def test_json_log_file_has_exactly_one_error_line(ocirt_bin, tmp_path):
    log = tmp_path / "log.json"
    rt = Runtime(ocirt_bin, str(tmp_path / "root"),
                 ["--log", str(log), "--log-format", "json"])
    r = rt("state", "nope")
    assert r.rc == 1
    assert r.err.strip() == "container does not exist"  # the bare message on stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry) == ["level", "msg", "time"]
    assert entry["level"] == "error" and entry["msg"] == "container does not exist"
    assert RFC3339.match(entry["time"])


def test_log_file_is_created_even_on_success(ocirt_bin, tmp_path):
    log = tmp_path / "sub-log.json"
    rt = Runtime(ocirt_bin, str(tmp_path / "root"), ["--log", str(log), "--log-format=json"])
    assert rt("list").rc == 0
    assert log.exists() and log.read_text() == ""


def test_text_log_format_is_logrus(ocirt):
    r = ocirt("state", "nope")
    assert re.match(r'^time="[^"]+" level=error msg="container does not exist"$', r.err.strip())


def test_spec_writes_runcs_template(ocirt_bin, tmp_path):
    subprocess.run([ocirt_bin, "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["process"]["args"] == ["sh"] and config["root"]["path"] == "rootfs"
    assert {n["type"] for n in config["linux"]["namespaces"]} == {
        "pid", "network", "ipc", "uts", "mount"}
    r = subprocess.run([ocirt_bin, "spec", "--bundle", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "exists" in r.stderr
    rootless = tmp_path / "rootless"
    rootless.mkdir()
    subprocess.run([ocirt_bin, "spec", "--rootless", "-b", str(rootless)], check=True)
    config = json.loads((rootless / "config.json").read_text())
    assert {n["type"] for n in config["linux"]["namespaces"]} >= {"user", "mount"}
    assert config["linux"]["uidMappings"][0]["hostID"] == os.geteuid()


def test_features_match_the_tables(ocirt_bin):
    out = subprocess.run([ocirt_bin, "features"], capture_output=True, text=True, check=True)
    features = json.loads(out.stdout)
    assert "rbind" in features["mountOptions"] and "tmpcopyup" in features["mountOptions"]
    assert set(features["linux"]["namespaces"]) == {
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"}
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    assert features["linux"]["mountExtensions"]["idmap"]["enabled"] is True
    # runtime-spec 1.3, as runc 1.5 reports it: both implemented.
    assert features["ociVersionMax"] == "1.3.0"
    assert features["linux"]["intelRdt"] == {"enabled": True, "schemata": True,
                                             "monitoring": True}
    assert features["linux"]["memoryPolicy"] == {
        "modes": ["MPOL_BIND", "MPOL_DEFAULT", "MPOL_INTERLEAVE", "MPOL_LOCAL",
                  "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE"],
        "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]}
    assert features["hooks"] == ["prestart", "createRuntime", "createContainer",
                                 "startContainer", "poststart", "poststop"]


def test_checkpoint_help_succeeds_now_that_it_is_implemented(ocirt):
    """podman and CRI-O probe `checkpoint --help`: exit 0 says the runtime can checkpoint."""
    r = ocirt("checkpoint", "--help")
    assert r.rc == 0 and "not implemented" not in r.out
    for flag in ("--image-path", "--work-path", "--leave-running", "--tcp-established",
                 "--ext-unix-sk", "--shell-job", "--file-locks", "--pre-dump",
                 "--parent-path", "--manage-cgroups-mode", "--empty-ns", "--auto-dedup"):
        assert flag in r.out
    r = ocirt("restore", "--help")
    assert r.rc == 0
    for flag in ("--image-path", "--detach", "--pid-file", "--console-socket",
                 "--no-subreaper", "--bundle"):
        assert flag in r.out
