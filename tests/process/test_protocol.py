"""The parent/child protocol: JSON messages with fds over a SEQPACKET socketpair."""

from __future__ import annotations

import os

import pytest

from ocirt.process.protocol import ChildError, ProtocolError, socketpair


def test_messages_and_fds_cross():
    a, b = socketpair()
    r, w = os.pipe()
    a.send("init-pid", fds=[w], pid=42)
    msg, fds = b.recv()
    assert msg == {"type": "init-pid", "pid": 42} and len(fds) == 1
    os.write(fds[0], b"x")
    assert os.read(r, 1) == b"x"
    for fd in (r, w, *fds):
        os.close(fd)
    a.close()
    b.close()


def test_unknown_types_are_refused_both_ways():
    a, b = socketpair()
    with pytest.raises(ProtocolError):
        a.send("pickle-me")
    a.sock.send(b'{"type": "rm -rf"}')
    with pytest.raises(ProtocolError):
        b.recv()
    a.sock.send(b"not json")
    with pytest.raises(ProtocolError):
        b.recv()
    a.close()
    b.close()


def test_child_error_is_reported_whole_and_logs_pass_through():
    a, b = socketpair()
    seen = []
    a.send("log", level="warning", msg="skipped /proc/kcore")
    a.send("error", message="mount /proc: permission denied")
    with pytest.raises(ChildError, match="mount /proc: permission denied"):
        b.expect("ready", on_log=lambda lvl, m: seen.append((lvl, m)))
    assert seen == [("warning", "skipped /proc/kcore")]


def test_peer_death_is_an_error_not_a_hang():
    a, b = socketpair()
    a.close()
    with pytest.raises(ChildError, match="exited unexpectedly"):
        b.expect("ready")


def test_a_peer_killed_with_our_message_unread_is_a_death_not_a_reset():
    """The init OOM-killed mid-handshake: ECONNRESET on recv, EPIPE on send, both
    the one ChildDied error instead of a ConnectionResetError traceback."""
    from ocirt.process.protocol import ChildDied

    a, b = socketpair()
    a.send("go")
    b.close()  # dies with "go" unread
    with pytest.raises(ChildDied, match="exited unexpectedly"):
        a.expect("init-pid")
    with pytest.raises(ChildDied):
        a.send("idmap-done")
    a.close()


def test_the_last_words_of_a_peer_that_died_with_our_message_unread_are_read():
    """The reset comes first, then the peer's final `error`: it is reported, whole."""
    a, b = socketpair()
    a.send("go")
    b.send("error", message="the reason")
    b.close()
    with pytest.raises(ChildError, match="the reason"):
        a.expect("init-pid")
    a.close()
