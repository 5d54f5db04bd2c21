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


def test_siblings_lie_beside_the_guests_checkout(tmp_path):
    """--sibling DIR is ../DIR's name of the guest's /work (reference fixtures that tests
    read next to the checkout), and cannot hide a directory of the guest's own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    tools = tmp_path / "tools"
    tools.mkdir()
    assert hosts.share_dirs([str(tools)], [str(shared)]) == [
        (str(tools), "/mnt/shares/tools"), (str(shared), "/shared")]
    for name in ("usr", "work", "etc"):
        (tmp_path / name).mkdir()
        with pytest.raises(SystemExit, match="unique and plain"):
            hosts.share_dirs([], [str(tmp_path / name)])


def _out(tmp_path, rc: str | None, leftovers: str = ""):
    out = tmp_path / "out"
    out.mkdir()
    (out / "output.log").write_text("ran\n")
    if rc is not None:
        (out / "rc").write_text(rc + "\n")
        (out / "leftovers").write_text(leftovers)
    console = tmp_path / "console.log"
    console.write_text("boot log\n")
    return str(out), str(console)


def test_a_passing_command_that_left_something_behind_fails(tmp_path):
    out, console = _out(tmp_path, "0", "unit ocirt-test-x.scope\ncgroup /sys/fs/cgroup/x\n")
    result = hosts._result(out, console, True, "")
    assert result.rc == 1 and "ocirt-test-x.scope" in result.note
    assert result.output == "ran\n"


def test_a_failing_command_keeps_its_status_and_a_clean_one_passes(tmp_path):
    out, console = _out(tmp_path, "3", "mount /mnt/x\n")
    assert hosts._result(out, console, True, "").rc == 3
    clean = tmp_path / "clean"
    clean.mkdir()
    out, console = _out(clean, "0")
    assert hosts._result(out, console, True, "") == hosts.Result(0, "ran\n")


def test_no_result_from_the_guest_is_a_failure(tmp_path):
    out, console = _out(tmp_path, None)
    result = hosts._result(out, console, False, "qemu said")
    assert result.rc == 124 and "did not finish in time" in result.note
    assert "boot log" in result.note
