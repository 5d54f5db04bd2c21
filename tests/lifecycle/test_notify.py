"""NOTIFY_SOCKET: sd_notify from the container reaches the caller's socket (runc's relay)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conformance.runner import wait_for

pytestmark = pytest.mark.root


def test_ready_is_relayed_with_the_main_pid(ocirt, bundle, tmp_path):
    host = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(host)
    server.settimeout(20)
    b = bundle(["sh", "-c", "[ -S $NOTIFY_SOCKET ] && echo $NOTIFY_SOCKET > /tmp/seen; "
                            "exec sleep 100"])
    env = dict(os.environ, NOTIFY_SOCKET=host)
    seen = os.path.join(b, "rootfs", "tmp", "seen")
    try:
        ocirt("create", "--bundle", b, "c1", check=True, env=env)
        start = subprocess.Popen(ocirt.cmd("start", "c1"), env=env)
        assert wait_for(lambda: os.path.exists(seen))  # the socket is there, inside
        assert start.poll() is None  # `start` waits for READY
        inner = os.path.join(ocirt.root, "c1", "notify", "notify.sock")
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.sendto(b"STATUS=warming up\nREADY=1", inner)  # what the container's sd_notify sends
        client.close()
        assert start.wait(20) == 0
        messages = [server.recv(4096), server.recv(4096)]
    finally:
        server.close()
    pid = ocirt.state("c1")["pid"]
    assert messages == [b"READY=1\n", f"MAINPID={pid}\n".encode()]
    with open(seen) as f:
        assert f.read().strip() == "/run/notify/notify.sock"


def test_no_notify_socket_no_mount(ocirt, bundle):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    r = ocirt("run", "--bundle", bundle(["sh", "-c", "echo ${NOTIFY_SOCKET:-none}; "
                                                     "ls /run/notify 2>&1"]), "c1", env=env)
    assert r.out.splitlines()[0] == "none"
