"""errors: bad bundles and configs are refused, and a refused create leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest

from conformance import cgroupfs, procfs
from conformance.cases import case, deviation

pytestmark = pytest.mark.root


def _refused(h, bundle, cid=None):
    """create must fail and leave no container."""
    c = h.create(bundle, cid=cid, check=False)
    assert c.result.rc != 0, "create succeeded"
    assert h.rt.ids() == [], h.rt.ids()
    return c


@case("ER-01", "bundle.md", "MUST")
def test_missing_config(h):
    """a bundle without config.json is refused"""
    b = h.bundle(["true"])
    os.unlink(os.path.join(b, "config.json"))
    _refused(h, b)


@case("ER-02", "bundle.md", "MUST")
def test_invalid_json(h):
    """a config.json that is not JSON is refused"""
    b = h.bundle(["true"])
    with open(os.path.join(b, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.0.2", "process": ')
    _refused(h, b)


@case("ER-03", "config.md#root", "MUST")
def test_missing_rootfs(h):
    """a root.path that does not exist is refused"""
    b = h.bundle(["true"], edit=lambda cfg: cfg["root"].update(path="no-such-rootfs"))
    _refused(h, b)


@case("ER-04", "runtime.md#create", "MUST")
def test_missing_bundle(h):
    """a --bundle directory that does not exist is refused"""
    _refused(h, h.path("no-such-bundle"))


@case("ER-05", "config.md#process args", "MUST")
def test_empty_args(h):
    """process.args must have at least one entry"""
    b = h.bundle(["true"], edit=lambda cfg: cfg["process"].update(args=[]))
    assert h.run(b).rc != 0
    assert h.rt.ids() == []


@pytest.mark.parametrize("program", ["no-such-program", "/bin/no-such-program",
                                     "/etc/passwd"])
@case("ER-06", "runtime.md#lifecycle step 8", "MUST")
def test_program_cannot_run(h, program):
    """a program that does not exist or is not executable is an error, not a success"""
    r = h.run(h.bundle([program]))
    assert r.rc != 0, r
    assert h.rt.ids() == []


@deviation("crun", "crun 1.8.1 accepts a relative cwd (it resolves it against /)")
@case("ER-07", "config.md#process cwd", "MUST")
def test_relative_cwd(h):
    """a relative process.cwd is refused"""
    b = h.bundle(["pwd"], edit=lambda cfg: cfg["process"].update(cwd="tmp"))
    assert h.run(b).rc != 0
    assert h.rt.ids() == []


@case("ER-08", "config-linux.md#namespaces", "MUST")
def test_unknown_namespace(h):
    """an unknown namespace type is refused"""
    b = h.bundle(["true"], edit=lambda cfg: cfg["linux"]["namespaces"].append(
        {"type": "conformance"}))
    _refused(h, b)


@pytest.mark.parametrize("cid", ["../escape", "a/b", "..", "."])
@case("ER-09", "runtime.md#create", "MUST")
def test_invalid_id(h, cid):
    """an ID that is not a plain name is refused (and nothing is written outside --root)"""
    _refused(h, h.bundle(["sleep", "100"]), cid=cid)
    assert not os.path.exists(os.path.join(os.path.dirname(h.rt.root), "escape"))


@case("ER-10", "runtime.md#create", "MUST")
def test_missing_bind_source(h):
    """a bind mount whose source does not exist is refused"""
    def edit(cfg):
        cfg["mounts"].append({"destination": "/data", "type": "bind",
                              "source": h.path("no-such-source"), "options": ["rbind"]})
    _refused(h, h.bundle(["true"], edit=edit))


@case("ER-11", "runtime.md#create", "MUST")
def test_unknown_filesystem(h):
    """a mount of a filesystem type the kernel does not know is refused"""
    def edit(cfg):
        cfg["mounts"].append({"destination": "/data", "type": "conformancefs",
                              "source": "none"})
    _refused(h, h.bundle(["true"], edit=edit))


@case("ER-12", "runtime.md#start", "MUST")
def test_no_process(h):
    """without process, create or start fails; nothing is run"""
    b = h.bundle(["true"], edit=lambda cfg: cfg.pop("process"))
    c = h.create(b, check=False)
    if c.result.ok:
        assert c.start(check=False).rc != 0


@case("ER-13", "runtime.md#errors", "MUST")
def test_failed_create_leaves_nothing(h):
    """a refused create leaves no state, process, mount or cgroup behind"""
    path = h.cgroup_name()

    def edit(cfg):
        cfg["linux"]["cgroupsPath"] = path
        cfg["mounts"].append({"destination": "/late", "type": "bind",
                              "source": h.path("no-such-source"), "options": ["rbind"]})
    b = h.bundle(["sleep", "100"], edit=edit)
    c = _refused(h, b)
    assert h.rt("state", c.cid).rc != 0
    assert not os.listdir(h.rt.root) if os.path.isdir(h.rt.root) else True
    left = [d for d in (os.path.join(cgroupfs.own_dir(ctl), path)
                        for ctl in ("memory", "pids", "cpu", "devices", "freezer")
                        if cgroupfs.own_dir(ctl)) if os.path.isdir(d)]
    assert not left, f"cgroups left: {left}"
    sb = h.info.sandbox
    mounts = procfs.mountinfo(sb.pid if sb else "self")
    assert not [m for m in mounts if b in m.mountpoint], "mounts left in the runtime namespace"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            assert not root.startswith(b), f"process {pid} still runs in the bundle"


@case("ER-15", "config.md#extensibility", "MUST")
def test_unknown_properties_ignored(h):
    """unknown properties in config.json are ignored, not an error"""
    def edit(cfg):
        cfg["conformanceUnknown"] = {"nested": [1, 2]}
        cfg["process"]["conformanceUnknown"] = True
        cfg["linux"]["conformanceUnknown"] = "x"
    assert h.output(h.bundle(["echo", "ran"], edit=edit)).strip() == "ran"


@case("ER-16", "config.md#root", "MUST")
def test_absolute_root_path(h):
    """an absolute root.path outside the bundle works"""
    other = h.bundle(["true"])
    rootfs = os.path.join(other, "rootfs")
    b = h.bundle(["echo", "ran"], edit=lambda cfg: cfg["root"].update(path=rootfs))
    assert h.output(b).strip() == "ran"


@case("ER-17", "runtime.md#create", "MUST")
def test_config_not_an_object(h):
    """a config.json whose fields have the wrong types is refused"""
    b = h.bundle(["true"])
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"]["args"] = "true"
    cfg["linux"]["namespaces"] = {"type": "pid"}
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    _refused(h, b)
