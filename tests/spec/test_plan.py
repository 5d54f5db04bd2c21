"""config.json -> Plan: conversion and field-naming errors, without root."""

from __future__ import annotations

import copy

import pytest

from conformance.bundle import default_config
from ocirt.errors import ConfigError
from ocirt.linux import consts as c
from ocirt.spec.plan import build_plan, parse_mount_options


def plan_of(edit=None, bundle="/b"):
    config = default_config(["sh"])
    if edit:
        edit(config)
    return build_plan(config, bundle)


def error_of(edit) -> str:
    with pytest.raises(ConfigError) as info:
        plan_of(edit)
    return info.value.message


def test_default_config_converts():
    p = plan_of()
    assert p.rootfs == "/b/rootfs"
    assert p.namespaces == {"pid": "", "network": "", "ipc": "", "uts": "", "mount": ""}
    assert p.process.args == ["sh"] and p.process.cwd == "/"
    assert p.process.caps["bounding"] == (1 << 29) | (1 << 5) | (1 << 10)
    assert p.process.rlimits == [(7, 1024, 1024)]
    assert [m.destination for m in p.mounts][:2] == ["/proc", "/dev"]
    assert {d.path for d in p.devices} >= {"/dev/null", "/dev/zero", "/dev/tty"}


def test_absolute_root_path_is_kept():
    p = plan_of(lambda cfg: cfg["root"].update(path="/srv/root"))
    assert p.rootfs == "/srv/root"


@pytest.mark.parametrize("options,flags,data,prop", [
    (["ro", "nosuid", "nodev", "noexec"], c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC,
     "", []),
    (["rbind", "rw"], c.MS_BIND | c.MS_REC, "", []),
    (["bind", "rprivate", "shared"], c.MS_BIND, "", [c.MS_PRIVATE | c.MS_REC, c.MS_SHARED]),
    (["mode=755", "size=64k", "strictatime"], c.MS_STRICTATIME, "mode=755,size=64k", []),
    (["ro", "rw"], 0, "", []),
])
def test_mount_options(options, flags, data, prop):
    f, d, p, *_ = parse_mount_options(options)
    assert (f, d, p) == (flags, data, prop)


def test_recursive_attributes_and_tmpcopyup():
    _, _, _, rec_set, rec_clr, copyup = parse_mount_options(["rro", "rnoatime", "tmpcopyup"])
    assert rec_set == c.MOUNT_ATTR_RDONLY | c.MOUNT_ATTR_NOATIME
    assert rec_clr == c.MOUNT_ATTR__ATIME
    assert copyup is True


def test_bind_mount_type_and_relative_source():
    p = plan_of(lambda cfg: cfg["mounts"].append(
        {"destination": "/data", "source": "data", "options": ["bind", "ro"]}))
    m = p.mounts[-1]
    assert m.fstype == "bind" and m.source == "/b/data" and m.flags & c.MS_RDONLY


def test_spec_devices_replace_defaults_with_the_same_path():
    p = plan_of(lambda cfg: cfg["linux"].update(devices=[
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]))
    null = [d for d in p.devices if d.path == "/dev/null"]
    assert len(null) == 1 and null[0].mode == 0o600
    assert any(d.path == "/dev/fuse" and d.mode == 0o666 for d in p.devices)


@pytest.mark.parametrize("edit,needle", [
    (lambda cfg: cfg.pop("root"), "root: must be specified"),
    (lambda cfg: cfg["process"].update(args=[]), "process.args: args must not be empty"),
    (lambda cfg: cfg["process"].update(cwd="relative"), "process.cwd: Cwd must be an absolute"),
    (lambda cfg: cfg["process"]["user"].update(uid=-1), "process.user.uid: -1 is out of range"),
    (lambda cfg: cfg["process"]["user"].update(uid="0"), "process.user.uid: must be an integer"),
    (lambda cfg: cfg["process"].update(env=["NOEQUALS"]), "process.env[0]"),
    (lambda cfg: cfg["process"]["rlimits"].append({"type": "RLIMIT_TEST", "soft": 1, "hard": 1}),
     "process.rlimits[1].type"),
    (lambda cfg: cfg["process"]["rlimits"].append(cfg["process"]["rlimits"][0]),
     "duplicate rlimit"),
    (lambda cfg: cfg["process"].update(oomScoreAdj=2000), "process.oomScoreAdj"),
    (lambda cfg: cfg["linux"]["namespaces"].append({"type": "bogus"}),
     "linux.namespaces[5].type: namespace 'bogus' does not exist"),
    (lambda cfg: cfg["linux"]["namespaces"].append({"type": "pid"}), "duplicated ns 'pid'"),
    (lambda cfg: cfg["linux"]["namespaces"].append({"type": "user"}),
     "user namespaces enabled, but no uid mappings"),
    (lambda cfg: cfg["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "user namespace is not enabled"),
    (lambda cfg: cfg["linux"].update(timeOffsets={"boottime": {"secs": 1}}),
     "time offsets need a new time namespace"),
    (lambda cfg: cfg["linux"].update(sysctl={"kernel.panic": "1"}),
     "not in a separate kernel namespace"),
    (lambda cfg: cfg["linux"].update(rootfsPropagation="sideways"), "rootfsPropagation"),
    (lambda cfg: cfg["mounts"].append({"destination": "/x", "source": "/y"}),
     "mounts[6].type: must be set"),
    (lambda cfg: cfg["linux"].update(devices=[{"path": "dev/x", "type": "c", "major": 1,
                                               "minor": 1}]), "linux.devices[0].path"),
    (lambda cfg: cfg.update(hooks={"prestart": [{"path": "relative"}]}), "hooks.prestart[0].path"),
    (lambda cfg: cfg.update(hooks={"prestart": [{"path": "/x", "timeout": 0}]}),
     "hooks.prestart[0].timeout"),
    (lambda cfg: cfg.update(ociVersion="0.9"), "ociVersion"),
    (lambda cfg: cfg.update(hostname="h") or cfg["linux"]["namespaces"].pop(3),
     "hostname: unable to set hostname without a private UTS namespace"),
])
def test_errors_name_the_field(edit, needle):
    assert needle in error_of(edit)


def test_sysctls_need_their_namespace():
    p = plan_of(lambda cfg: cfg["linux"].update(sysctl={"net.ipv4.ip_forward": "1",
                                                        "kernel.shmmax": "1000"}))
    assert p.sysctl == {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"}

    def host_net(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                      if n["type"] != "network"]
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    assert "host's network namespace" in error_of(host_net)


def test_the_plan_does_not_alias_the_config():
    config = default_config(["sh"])
    before = copy.deepcopy(config)
    build_plan(config, "/b")
    assert config == before


def test_scheduler_and_io_priority():
    def edit(cfg):
        cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 7}
        cfg["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 5}
    p = plan_of(edit)
    assert p.process.io_priority == (3, 7)
    assert p.process.scheduler["policy"] == 3 and p.process.scheduler["nice"] == 5


def test_process_is_optional_until_start():
    p = plan_of(lambda cfg: cfg.pop("process"))
    assert p.has_process is False


def test_unknown_capabilities_are_warnings():
    p = plan_of(lambda cfg: cfg["process"]["capabilities"]["bounding"].append("CAP_TEST"))
    assert p.process.warnings == [
        "process.capabilities.bounding[3]: unknown capability 'CAP_TEST' ignored"]
    assert p.process.caps["bounding"] == (1 << 29) | (1 << 5) | (1 << 10)


# --- idmapped mounts ---------------------------------------------------------------------

MAP = [{"containerID": 0, "hostID": 1000, "size": 10}]


def _idmapped(options, uid=MAP, gid=MAP, kind="bind", userns=False):
    def edit(cfg):
        m = {"destination": "/m", "type": kind, "source": "/src", "options": options}
        if uid is not None:
            m["uidMappings"] = uid
        if gid is not None:
            m["gidMappings"] = gid
        cfg["mounts"].append(m)
        if userns:
            cfg["linux"]["namespaces"].append({"type": "user"})
            cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    return edit


def test_idmapped_mount_keeps_its_mappings_and_drops_the_option():
    m = plan_of(_idmapped(["rbind", "idmap"])).mounts[-1]
    assert m.idmapped and not m.idmap_recursive
    assert m.uid_map == m.gid_map == [(0, 1000, 10)]
    assert m.data == ""  # idmap is not a mount(2) option
    plain = plan_of().mounts[0]
    assert not plain.idmapped


def test_mappings_without_option_mean_idmap_and_ridmap_is_recursive():
    assert plan_of(_idmapped(["bind"])).mounts[-1].idmapped
    assert plan_of(_idmapped(["rbind", "ridmap"])).mounts[-1].idmap_recursive


def test_idmap_without_mappings_takes_the_container_maps():
    m = plan_of(_idmapped(["rbind", "idmap"], uid=None, gid=None, userns=True)).mounts[-1]
    assert m.uid_map == [(0, 100000, 65536)] and m.gid_map == [(0, 200000, 65536)]


@pytest.mark.parametrize("edit, needle", [
    (_idmapped(["idmap"], uid=None, gid=None),
     "mounts[6]: idmap without uidMappings/gidMappings needs the container's user namespace"),
    (_idmapped(["idmap"], gid=None), "mounts[6]: uidMappings and gidMappings must be given "
                                     "together"),
    (_idmapped(["idmap"], kind="tmpfs"), "mounts[6]: idmapped mounts are only supported for "
                                         "bind mounts, not type 'tmpfs'"),
    (_idmapped(["bind"], uid=[{"containerID": 0, "hostID": 1, "size": 0}]),
     "mounts[6].uidMappings[0].size: must be greater than zero"),
])
def test_idmapped_mount_errors(edit, needle):
    assert needle in error_of(edit)


def test_crun_inline_idmap_option():
    """podman passes `-v SRC:DST:idmap=uids=...;gids=...` through as crun spells it."""
    m = plan_of(_idmapped(["rbind", "ridmap=uids=0-1000-10#10-3000-5;gids=0-2000-10"],
                          uid=None, gid=None)).mounts[-1]
    assert m.uid_map == [(0, 1000, 10), (10, 3000, 5)] and m.gid_map == [(0, 2000, 10)]
    assert m.idmap_recursive and m.data == ""


@pytest.mark.parametrize("option, needle", [
    ("idmap=uids=0-1000-10", "both uids= and gids= are needed"),
    ("idmap=uids=0-1000;gids=0-1-1", "'0-1000' is not FSID-HOSTID-LENGTH"),
    ("idmap=users=0-1-1", "expected uids=...;gids=..."),
    ("idmap=uids=0-1-0;gids=0-1-1", "length must be > 0"),
])
def test_crun_inline_idmap_errors(option, needle):
    assert needle in error_of(_idmapped(["bind", option], uid=None, gid=None))
