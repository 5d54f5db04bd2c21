"""The parent/child protocol: a small closed set of JSON messages on a socketpair.

The runtime (`create`, `exec`) forks the processes that become the container. They talk
over an AF_UNIX SOCK_SEQPACKET socketpair (one message per datagram), each message one
JSON object with a `type` from MESSAGES; file descriptors travel with SCM_RIGHTS. Never
pickle: the child runs inside namespaces the container controls.

The exchange for `create` (P = runtime, I = intermediate child, C = container init):

    P -> I  go                 the container's cgroups exist; start making namespaces
    I -> P  idmap-request      I made a user namespace; P writes uid_map/gid_map
    P -> I  idmap-done
    I -> P  init-pid {pid}     I forked C (PID 1 of the new pid namespace); I exits.
                               P applies the resources (and moves C into whatever
                               cgroups I was not born in) while C makes its mounts
    C -> P  cgroup-join        C is about to depend on its cgroups (a new cgroup
    P -> C  cgroup-joined      namespace, a cgroup mount, device nodes): P answers once
                               C is in them
    C -> P  create-hooks       mounts are done; P runs prestart and createRuntime hooks
    P -> C  create-hooks-done
    C -> P  ready              P sets rlimits and oom_score_adj on C
    P -> C  ready-ack
    then EOF on the socket: C exec'd the sealed trampoline, which waits for `start`
    (P checks C is alive and is the trampoline, records the state and exits), or
    `error {message}` when the trampoline cannot run here (fail closed)

I is born in the container's cgroups where it can be (cgroups.Birth): clone3 with
CLONE_INTO_CGROUP into the cgroup2 directory, and I writing "0" to each v1 `tasks` file
first thing, so C is born in them too. Whatever is left (clone3 refused, rootless, the
systemd driver) P moves C into after I has made the namespaces: the kernel's first write
of a PID to a cgroup.procs file waits for an RCU grace period (7-15 ms here), and C's
mounts go on meanwhile. Nothing of the container's runs before C is in its cgroups and
its resources are applied: C asks before anything that depends on them, and the hooks
and the process come later still.

Either side may send `error {message}` instead, which ends the exchange; the child's error
is reported whole by the parent. `log {level, msg}` carries the child's warnings.
"""

from __future__ import annotations

import _socket
import struct

from ocirt import jsonio
from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any, NoReturn

MESSAGES = frozenset({
    "go", "idmap-request", "idmap-done", "init-pid", "cgroup-join", "cgroup-joined",
    "create-hooks", "create-hooks-done",
    "ready", "ready-ack", "error", "log",
    # exec
    "exec-pid",
})
MAX_FDS = 16
MAX_SIZE = 1 << 16


class ChildError(OcirtError):
    """An error the child reported (or its unexpected death)."""


class ChildDied(ChildError):
    """The peer went away without a word (killed: by the OOM killer, a signal...)."""

    def __init__(self) -> None:
        super().__init__("container init exited unexpectedly")


class ProtocolError(OcirtError):
    pass


def socketpair() -> tuple[Channel, Channel]:
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return Channel(a), Channel(b)


class Channel:
    """One end of the socketpair."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, fds: tuple[int, ...] | list[int] = (), **fields: Any) -> None:
        if kind not in MESSAGES:
            raise ProtocolError(f"internal error: unknown message type {kind!r}")
        data = jsonio.dumps({"type": kind, **fields}).encode()
        anc = []
        if fds:
            anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        try:
            self.sock.sendmsg([data], anc)
        except (ConnectionResetError, BrokenPipeError):
            self._raise_last_words()

    def _raise_last_words(self) -> NoReturn:
        """The peer is gone: the `error` it may have sent before it went, else ChildDied."""
        self.sock.setblocking(False)
        while True:
            try:
                msg, fds = self.recv()
            except (EOFError, BlockingIOError, ProtocolError, OSError):
                raise ChildDied() from None
            for fd in fds:
                _close(fd)
            if msg["type"] == "error":
                raise ChildError(str(msg.get("message", "unknown error in container init")))

    def recv(self) -> tuple[dict[str, Any], list[int]]:
        """One message and the fds that came with it; EOFError if the peer is gone."""
        resets = 0
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(
                    MAX_SIZE, _socket.CMSG_SPACE(MAX_FDS * 4))
                break
            except InterruptedError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                # It died with our message unread. The kernel reports that once, before
                # what it sent us last (its error, say), which the next read returns.
                resets += 1
                if resets > 1:
                    raise EOFError from None
        fds: list[int] = []
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        if not data:
            for fd in fds:
                _close(fd)
            raise EOFError
        try:
            msg = jsonio.loads(data)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") not in MESSAGES:
            for fd in fds:
                _close(fd)
            raise ProtocolError("malformed message from the container process")
        return msg, fds

    def expect(self, *kinds: str, on_log: Any = None) -> tuple[dict[str, Any], list[int]]:
        """Wait for one of `kinds`; `error` raises ChildError, `log` goes to `on_log`."""
        while True:
            try:
                msg, fds = self.recv()
            except EOFError:
                raise ChildDied() from None
            kind = msg["type"]
            if kind == "log":
                if on_log is not None:
                    on_log(str(msg.get("level", "info")), str(msg.get("msg", "")))
                continue
            if kind == "error":
                for fd in fds:
                    _close(fd)
                raise ChildError(str(msg.get("message", "unknown error in container init")))
            if kind not in kinds:
                for fd in fds:
                    _close(fd)
                raise ProtocolError(f"unexpected message {kind!r} (wanted {', '.join(kinds)})")
            return msg, fds


def wait_closed(channel: Channel, on_log: Any = None) -> None:
    """Wait until the peer closes its end (its execve closed it): success. An `error`
    message instead raises ChildError."""
    while True:
        try:
            msg, fds = channel.recv()
        except EOFError:
            return
        for fd in fds:
            _close(fd)
        if msg["type"] == "log":
            if on_log is not None:
                on_log(str(msg.get("level", "info")), str(msg.get("msg", "")))
            continue
        if msg["type"] == "error":
            raise ChildError(str(msg.get("message", "unknown error")))
        raise ProtocolError(f"unexpected message {msg['type']!r}")


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
