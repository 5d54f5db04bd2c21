"""File descriptors: only stdio and --preserve-fds reach the container."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.root

LIST_FDS = ["sh", "-c", "cd /proc/self/fd && for f in *; do echo $f $(readlink $f); done"]


def container_fds(output: str) -> dict[int, str]:
    fds = {}
    for line in output.splitlines():
        num, _, target = line.partition(" ")
        if num.isdigit():
            fds[int(num)] = target
    return fds


def run_with_fds(ocirt_bin, state_root, bundle_dir, extra_args, pass_fds):
    return subprocess.run([ocirt_bin, "--root", state_root, "run", *extra_args, "--bundle",
                           bundle_dir, "c1"], capture_output=True, text=True,
                          pass_fds=pass_fds, timeout=30)


def test_stray_fds_do_not_reach_the_container(ocirt_bin, bundle, state_root, tmp_path):
    """Inherited host fds (a directory, a file, a pipe: what engines leak) stay out."""
    host_dir = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    host_file = os.open(str(tmp_path / "f"), os.O_CREAT | os.O_RDWR)
    r_pipe, w_pipe = os.pipe()
    try:
        r = run_with_fds(ocirt_bin, state_root, bundle(LIST_FDS), [],
                         (host_dir, host_file, w_pipe))
    finally:
        for fd in (host_dir, host_file, r_pipe, w_pipe):
            os.close(fd)
    assert r.returncode == 0, r.stderr
    fds = container_fds(r.stdout)
    # 0-2 plus the fd `ls`-style listing itself opens (the cd'd directory)
    assert set(fds) - {0, 1, 2} <= {3}, fds
    assert str(tmp_path) not in r.stdout


def test_preserve_fds_passes_exactly_n(ocirt_bin, bundle, state_root, tmp_path):
    """fds 3..3+N-1 reach the container at the same numbers; fd 3+N does not."""
    b = bundle(["sh", "-c", "echo x >&3; echo y >&4"])
    a, z = tmp_path / "a", tmp_path / "b"
    r = subprocess.run(["sh", "-c", f'exec 3>"{a}" 4>"{z}"; exec "$0" "$@"', ocirt_bin,
                        "--root", state_root, "run", "--preserve-fds", "1", "--bundle", b,
                        "c1"], capture_output=True, text=True, timeout=30)
    assert a.read_text() == "x\n"
    assert z.read_text() == ""
    assert "4: Bad file descriptor" in r.stderr


def test_preserve_fds_of_a_closed_fd_is_an_error(ocirt, bundle):
    r = ocirt("run", "--preserve-fds", "40", "--bundle", bundle(["true"]), "c1")
    assert r.rc == 1 and "is not open" in r.err


def test_cwd_through_a_leaked_fd_cannot_escape(ocirt, bundle):
    """CVE-2024-21626: cwd=/proc/self/fd/N must never leave the container's root."""
    for n in range(3, 12):
        b = bundle(["sh", "-c", "pwd; ls /"],
                   edit=lambda c, n=n: c["process"].update(cwd=f"/proc/self/fd/{n}"))
        r = ocirt("run", "--bundle", b, f"c{n}")
        if r.rc == 0:
            assert "(unreachable)" not in r.out
            assert "bundle" not in r.out
