"""`exec --process`: what a process.json leaves out comes from config.json, as runc's
newInitConfig takes the container's values first and lets the process's override them:
capabilities (absent), rlimits (none), apparmorProfile and selinuxLabel (empty),
ioPriority, scheduler and execCPUAffinity (absent). A process.json without
"capabilities" must never give the process every capability of the runtime. Side by
side with runc where it is installed (rlimits: runc's current code; Debian 12's runc
1.1 leaves an exec'd process the caller's).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.root

# CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10): the bundle's set
DEFAULT_MASK = (1 << 29) | (1 << 5) | (1 << 10)


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_a_process_file_without_capabilities_gets_the_containers(runtimes, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"cwd": "/", "env": ["PATH=/bin"],
                                "args": ["cat", "/proc/self/status"]}))
    for rt, cid in runtimes:
        r = rt("exec", "--process", str(path), cid)
        assert r.rc == 0, (rt.name, r)
        fields = status_fields(r.out)
        for name in ("CapBnd", "CapPrm", "CapEff"):
            assert int(fields[name], 16) == DEFAULT_MASK, (rt.name, name, fields[name])
        if rt.name == "runc":
            continue  # Debian 12's runc 1.1 leaves an exec'd process the caller's rlimits
        limits = tmp_path / "limits.json"
        limits.write_text(json.dumps({"cwd": "/", "env": ["PATH=/bin"],
                                      "args": ["cat", "/proc/self/limits"]}))
        r = rt("exec", "--process", str(limits), cid)  # config.json's RLIMIT_NOFILE
        assert r.rc == 0, (rt.name, r)
        nofile = [line.split()[3:5] for line in r.out.splitlines()
                  if line.startswith("Max open files")]
        assert nofile == [["1024", "1024"]], (rt.name, r.out)


def test_a_process_files_own_values_win(runtimes, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "cwd": "/", "env": ["PATH=/bin"], "args": ["cat", "/proc/self/status"],
        "capabilities": {"bounding": ["CAP_KILL"], "permitted": ["CAP_KILL"],
                         "effective": ["CAP_KILL"]}}))
    for rt, cid in runtimes:
        r = rt("exec", "--process", str(path), cid)
        assert r.rc == 0, (rt.name, r)
        fields = status_fields(r.out)
        assert int(fields["CapBnd"], 16) == 1 << 5, (rt.name, fields["CapBnd"])
        assert int(fields["CapEff"], 16) == 1 << 5, (rt.name, fields["CapEff"])
