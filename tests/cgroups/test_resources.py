"""linux.resources decoding, update merging and the update command's flag parsing."""

from __future__ import annotations

import pytest

from ocirt.cgroups.resources import DeviceRule, merge, parse
from ocirt.cli.cgroup import parse_duration, ram_in_bytes, resources_from_flags
from ocirt.cli.commands import COMMANDS
from ocirt.cli.parser import parse as parse_flags
from ocirt.errors import ConfigError, UsageError


def test_full_resources_decode():
    res = parse({
        "memory": {"limit": 1 << 26, "swap": -1, "disableOOMKiller": True, "swappiness": 10},
        "cpu": {"shares": 512, "quota": -1, "cpus": "0-1"},
        "pids": {"limit": 10},
        "blockIO": {"weight": 100, "weightDevice": [{"major": 8, "minor": 0, "weight": 50}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
        "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 3}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3}},
        "unified": {"memory.high": "max"},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"}],
    })
    assert res.memory == {"limit": 1 << 26, "swap": -1, "disableOOMKiller": True,
                          "swappiness": 10}
    assert res.cpu == {"shares": 512, "quota": -1, "cpus": "0-1"}
    assert res.pids_limit == 10
    assert res.blkio["weightDevice"] == [(8, 0, 50, None)]
    assert res.blkio["throttleReadBpsDevice"] == [(8, 0, 1000)]
    assert res.hugepages == [("2MB", 1 << 21)]
    assert res.network == {"classID": 7, "priorities": [("eth0", 3)]}
    assert res.rdma == {"mlx5_1": {"hcaHandles": 3}}
    assert res.unified == {"memory.high": "max"}
    assert res.devices == [DeviceRule(False, "a", -1, -1, "rwm"),
                           DeviceRule(True, "c", 1, 3, "rw")]  # access letters normalised
    assert res.limits_requested()
    assert not parse(None).limits_requested()
    assert not parse({"devices": [{"allow": True}]}).limits_requested()


@pytest.mark.parametrize("raw,message", [
    ({"memory": {"limit": "1g"}}, "linux.resources.memory.limit: must be an integer"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit: must be an integer"),
    ({"memory": {"disableOOMKiller": 1}},
     "linux.resources.memory.disableOOMKiller: must be a boolean"),
    ({"cpu": {"shares": -2}}, "linux.resources.cpu.shares: -2 is out of range"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus: must be a string"),
    ({"pids": []}, "linux.resources.pids: must be an object"),
    ({"blockIO": {"weight": 70000}}, "linux.resources.blockIO.weight: 70000 is out of range"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0]: major and minor are required"),
    ({"hugepageLimits": [{"pageSize": "2MB"}]},
     "linux.resources.hugepageLimits[0]: limit is required"),
    ({"hugepageLimits": [{"pageSize": "../x", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize: invalid page size"),
    ({"unified": {"../memory.max": "1"}},
     "linux.resources.unified.../memory.max: must be a file name"),
    ({"devices": [{"access": "rwm"}]}, "linux.resources.devices[0].allow: must be a boolean"),
    ({"devices": [{"allow": True, "type": "x"}]},
     "linux.resources.devices[0].type: invalid device type"),
    ({"devices": [{"allow": True, "access": "rwx"}]},
     "linux.resources.devices[0].access: invalid access"),
    ({"network": {"priorities": [{"name": "a b", "priority": 1}]}},
     "linux.resources.network.priorities[0].name: invalid interface name"),
])
def test_errors_name_the_field(raw, message):
    with pytest.raises(ConfigError) as exc:
        parse(raw)
    assert str(exc.value).startswith(message), str(exc.value)


def test_merge_follows_runc_update_rules():
    stored = {"memory": {"limit": 100, "swap": 200}, "cpu": {"shares": 2},
              "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 5}],
                          "weightDevice": [{"major": 8, "minor": 0, "weight": 10,
                                            "leafWeight": 20}]},
              "devices": [{"allow": False}]}
    update = {"memory": {"limit": 300}, "pids": {"limit": 4},
              "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 9},
                                                    {"major": 8, "minor": 16, "rate": 1}],
                          "weightDevice": [{"major": 8, "minor": 0, "weight": 30}]}}
    merged = merge(stored, update)
    assert merged["memory"] == {"limit": 300, "swap": 200}
    assert merged["cpu"] == {"shares": 2}
    assert merged["pids"] == {"limit": 4}
    assert merged["blockIO"]["throttleReadBpsDevice"] == [
        {"major": 8, "minor": 0, "rate": 9}, {"major": 8, "minor": 16, "rate": 1}]
    assert merged["blockIO"]["weightDevice"] == [
        {"major": 8, "minor": 0, "weight": 30, "leafWeight": 20}]
    assert merged["devices"] == [{"allow": False}]
    assert stored["memory"] == {"limit": 100, "swap": 200}  # the input is not changed


def _update_opts(*argv: str):
    opts, args = parse_flags(COMMANDS["update"].flags, [*argv, "c1"])
    return opts


def test_update_flags_become_resources():
    opts = _update_opts("--memory", "128m", "--memory-swap", "-1", "--cpu-share", "256",
                        "--cpu-quota", "-1", "--cpu-period", "100000", "--cpuset-cpus", "0",
                        "--pids-limit", "20", "--blkio-weight", "300",
                        "--memory-reservation", "1.5k", "--cpu-idle", "1")
    assert resources_from_flags(opts) == {
        "memory": {"limit": 128 << 20, "swap": -1, "reservation": 1536},
        "cpu": {"cpus": "0", "idle": 1, "period": 100000, "shares": 256, "quota": -1},
        "pids": {"limit": 20},
        "blockIO": {"weight": 300},
    }
    assert resources_from_flags(_update_opts()) == {}
    with pytest.raises(UsageError, match="invalid value for cpu-share"):
        resources_from_flags(_update_opts("--cpu-share", "-5"))
    with pytest.raises(UsageError, match="invalid value for memory: invalid size"):
        resources_from_flags(_update_opts("--memory", "lots"))


@pytest.mark.parametrize("text,value", [("1024", 1024), ("1k", 1024), ("64M", 64 << 20),
                                        ("1g", 1 << 30), ("2GiB", 2 << 30), ("3mb", 3 << 20),
                                        ("1.5m", 3 << 19), ("10 k", 10240)])
def test_ram_in_bytes(text, value):
    assert ram_in_bytes(text) == value


@pytest.mark.parametrize("text,seconds", [("5s", 5), ("250ms", 0.25), ("1m30s", 90),
                                          ("1.5h", 5400), ("0", 0), ("-1s", -1),
                                          ("100us", 1e-4)])
def test_go_durations(text, seconds):
    assert parse_duration(text, "interval") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "s", "1x", "", "1.2.3s"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="invalid value"):
        parse_duration(text, "interval")
