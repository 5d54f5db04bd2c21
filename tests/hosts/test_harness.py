"""The host harness's own logic, without booting anything: the guest gets every package
the checkout's setup installs (it has no network), and the image key follows them."""

from __future__ import annotations

import dataclasses

import pytest

from tests import hosts


def test_bash_arrays_on_one_line_and_many():
    text = 'a=(x y)\nb=(\n  # (a comment with parens)\n  p q  # tail\n  r\n)\nc=(z)\n'
    assert hosts._bash_array(text, "a") == ["x", "y"]
    assert hosts._bash_array(text, "b") == ["p", "q", "r"]
    assert hosts._bash_array(text, "missing") == []


def test_the_guest_gets_what_setup_and_ci_install():
    packages = hosts.all_packages(hosts.KINDS["debian12-v2"])
    for name in ("python3-venv", "runc", "podman", "busybox-static", "containerd",
                 "linux-image-amd64", "systemd", "apparmor"):
        assert name in packages
    assert len(hosts.checkout_packages()) > 20  # the whole multi-line array, not a part


def test_the_image_key_follows_the_packages():
    kind = hosts.KINDS["debian12-v2"]
    other = dataclasses.replace(kind, packages=kind.packages + ("strace",))
    assert hosts.image_dir(kind) != hosts.image_dir(other)
    assert hosts.image_dir(kind) == hosts.image_dir(kind)


def test_the_users_kernel_command_line():
    cmdline = hosts.KINDS["debian12-v2"].cmdline.split()
    assert "systemd.unified_cgroup_hierarchy=1" in cmdline
    assert {"apparmor=1", "security=apparmor"} <= set(cmdline)


def test_shares_are_read_only_directories_named_in_the_guest(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    assert hosts.share_dirs([str(tools) + "/"]) == [(str(tools), "/mnt/shares/tools")]
    with pytest.raises(SystemExit, match="not a directory"):
        hosts.share_dirs([str(tmp_path / "missing")])
    other = tmp_path / "b"
    (other / "tools").mkdir(parents=True)
    with pytest.raises(SystemExit, match="unique"):
        hosts.share_dirs([str(tools), str(other / "tools")])
