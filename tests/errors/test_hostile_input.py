"""Hostile config.json values: refused by real `ocirt create` with one line naming the
field and runc's exit code (1), never `internal error` or a traceback, nothing left behind.

Where runc refuses the same input its exit code is compared; where runc accepts it
(a NUL in the hostname, a huge device number that Go silently truncates) ocirt is
stricter on purpose and only its own answer is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conformance.runner import Runtime
from tests.conftest import IN_CHROOT
from tests.leaks import assert_nothing_left

pytestmark = pytest.mark.root

HAVE_RUNC = shutil.which("runc") is not None and not IN_CHROOT


def _dev(**fields):
    return lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "c", **fields}])


# name -> (edit, the field the error must name, whether runc refuses it too)
CASES = {
    "nul-arg": (lambda c: c["process"].update(args=["true\0x"]), "process.args[0]", True),
    "nul-cwd": (lambda c: c["process"].update(cwd="/\0x"), "process.cwd", True),
    "nul-env": (lambda c: c["process"].update(env=["A=\0"]), "process.env[0]", True),
    "nul-masked": (lambda c: c["linux"].update(maskedPaths=["/proc/kcore\0"]),
                   "linux.maskedPaths[0]", True),
    "nul-root": (lambda c: c["root"].update(path="rootfs\0"), "root.path", True),
    "nul-hook": (lambda c: c.update(hooks={"prestart": [{"path": "/bin/true\0"}]}),
                 "hooks.prestart[0].path", True),
    "nul-mount-option": (lambda c: c["mounts"].append(
        {"destination": "/x", "type": "tmpfs", "source": "a", "options": ["mode=\0"]}),
        "options[0]", True),
    "nul-cgroups-path": (lambda c: c["linux"].update(cgroupsPath="a\0b"),
                         "linux.cgroupsPath", True),
    "nul-device-path": (lambda c: c["linux"].update(devices=[
        {"path": "/dev/x\0", "type": "c", "major": 1, "minor": 3}]),
        "linux.devices[0].path", True),
    "nul-hostname": (lambda c: c.update(hostname="a\0b"), "hostname", False),
    "nul-sysctl": (lambda c: c["linux"].update(sysctl={"kernel.domainname": "a\0"}),
                   "linux.sysctl", False),
    "surrogate-arg": (lambda c: c["process"].update(args=["true\udc80"]),
                      "process.args[0]", True),
    "surrogate-env": (lambda c: c["process"].update(env=["A=\ud800"]), "process.env[0]",
                      True),
    "surrogate-cwd": (lambda c: c["process"].update(cwd="/\ud800"), "process.cwd", False),
    "surrogate-key": (lambda c: c["linux"].update(resources={"\udfff": 1}),
                      "linux.resources", False),
    "too-many-gids": (lambda c: c["process"]["user"].update(
        additionalGids=list(range(100000))), "process.user.additionalGids", True),
    "negative-major": (_dev(major=-1, minor=3), "linux.devices[0].major", True),
    "huge-major": (_dev(major=1 << 40, minor=3), "linux.devices[0].major", False),
    "huge-minor": (_dev(major=1, minor=1 << 21), "linux.devices[0].minor", False),
    "negative-minor": (_dev(major=1, minor=-5), "linux.devices[0].minor", False),
    "huge-hook-timeout": (lambda c: c.update(hooks={"prestart": [
        {"path": "/bin/true", "timeout": 1 << 70}]}), "hooks.prestart[0].timeout", True),
    "huge-cpu-list": (lambda c: c["process"].update(
        execCPUAffinity={"initial": "0-99999999999"}), "process.execCPUAffinity.initial",
        False),
    "unicode-digit-cpu": (lambda c: c["process"].update(execCPUAffinity={"final": "\u00b2"}),
                          "process.execCPUAffinity.final", False),
}


def _one_line_error(r, field: str) -> None:
    err = r.err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert field in err, err


@pytest.fixture
def runc(tmp_path):
    rt = Runtime(shutil.which("runc") or "runc", str(tmp_path / "runc-state"))
    yield rt
    rt.cleanup()


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_field_refused_with_its_name(name, ocirt, runc, bundle):
    edit, field, runc_refuses = CASES[name]
    b = bundle(["true"], edit=edit)
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1, r
    _one_line_error(r, field)
    assert_nothing_left(ocirt.root, "c1", b)
    if runc_refuses and HAVE_RUNC:
        theirs = runc("create", "--bundle", b, "c1")
        assert theirs.rc == r.rc, theirs


def test_nul_in_annotations_is_accepted_like_runc(ocirt, bundle):
    """CRI-O copies Kubernetes annotations, where NUL is allowed; they are only stored."""
    b = bundle(["true"], edit=lambda c: c.update(annotations={"k": "a\0b"}))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 0, r
    assert ocirt.state("c1")["annotations"] == {"k": "a\0b"}


def _write_config(bundle_dir: str, text: str | bytes) -> None:
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(os.path.join(bundle_dir, "config.json"), mode) as f:
        f.write(text)


def _config_text(bundle_dir: str) -> str:
    with open(os.path.join(bundle_dir, "config.json")) as f:
        return f.read()


@pytest.mark.parametrize("depth, words", [(100, "nested more than 64 levels deep"),
                                          (200000, "nested too deeply")])
def test_deeply_nested_json_is_refused(ocirt, bundle, depth, words):
    b = bundle(["true"])
    config = json.loads(_config_text(b))
    text = json.dumps(config)[:-1] + ', "x-vendor": ' + "[" * depth + "]" * depth + "}"
    _write_config(b, text)
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1, r
    _one_line_error(r, words)
    assert_nothing_left(ocirt.root, "c1", b)


def test_oversized_config_is_refused(ocirt, bundle):
    b = bundle(["true"])
    config = json.loads(_config_text(b))
    config["annotations"] = {"big": "x" * (17 << 20)}
    _write_config(b, json.dumps(config))
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1, r
    _one_line_error(r, "config.json: larger than 16 MiB")


def test_invalid_utf8_names_the_line(ocirt, bundle):
    b = bundle(["true"])
    text = _config_text(b).replace('"true"', '"tr\\u0075e"', 1).encode()
    text = text.replace(b'"TERM=xterm"', b'"TERM=\xff"')
    _write_config(b, text)
    r = ocirt("create", "--bundle", b, "c1")
    assert r.rc == 1, r
    _one_line_error(r, "config.json: invalid JSON: invalid UTF-8 at line")


def test_config_fifo_is_refused_without_blocking(ocirt, bundle):
    b = bundle(["true"])
    os.unlink(os.path.join(b, "config.json"))
    os.mkfifo(os.path.join(b, "config.json"))
    try:
        r = ocirt("create", "--bundle", b, "c1", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("ocirt create blocked on a FIFO config.json")
    assert r.rc == 1, r
    _one_line_error(r, "config.json is not a regular file")


def test_non_utf8_bundle_path_is_refused_like_runc(ocirt, runc, bundle, tmp_path):
    b = bundle(["true"])
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bundle\xff")
    os.rename(b, odd)
    r = ocirt("create", "--bundle", odd, "c1")
    assert r.rc == 1, r
    _one_line_error(r, "the path is not UTF-8 text")
    if HAVE_RUNC:
        assert runc("create", "--bundle", odd, "c1").rc == 1
