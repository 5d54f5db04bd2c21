"""The compiled filter as the container's process loads it, and the notify hand-over.

This module runs inside the container init after pivot_root, where the host's Python
files are out of reach: it imports everything it needs at the top, and `install` uses
nothing but the kernel. It never needs libseccomp.

Seccomp notify (runtime-spec config-linux.md, "The Container Process State"): with
SCMP_ACT_NOTIFY rules the filter is loaded with SECCOMP_FILTER_FLAG_NEW_LISTENER, and the
listener fd goes to the agent at `listenerPath` in one SCM_RIGHTS message whose payload
is the container process state as JSON (`ociVersion`, `fds: ["seccompFd"]`, `pid`,
`metadata`, `state`), as runc sends it. runc's parent connects after the init loaded the
filter; our init loads it as the very last step, after the runtime has exited, and cannot
reach a host path from inside the container, so `create` connects to the agent before it
forks and the init keeps the connected socket until it sends.
"""

from __future__ import annotations

import _socket
import struct

from ocirt import OCI_VERSION, jsonio
from ocirt.errors import OcirtError, errno_text
from ocirt.linux import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SECCOMP_FD_NAME = "seccompFd"
_STATE_KEYS = ("ociVersion", "id", "status", "pid", "bundle", "annotations")


class Listener:
    """A connection to the seccomp agent, made by the runtime before it forks."""

    def __init__(self, path: str, metadata: str) -> None:
        self.path = path
        self.metadata = metadata
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)  # close-on-exec
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise OcirtError("failed to connect with seccomp agent specified in the seccomp "
                             f"profile: dial unix {path}: {errno_text(exc.errno or 0)}") \
                from None
        self.sock = sock

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def message(self, state: dict[str, Any], pid: int | None) -> bytes:
        """The container process state, in the field order of runtime-spec's Go types."""
        inner = {key: state[key] for key in _STATE_KEYS if state.get(key) not in (None, {})}
        inner.setdefault("bundle", "")
        if not inner.get("pid"):
            inner.pop("pid", None)
        outer: dict[str, Any] = {"ociVersion": OCI_VERSION, "fds": [SECCOMP_FD_NAME],
                                 "pid": pid if pid is not None else state.get("pid", 0)}
        if self.metadata:
            outer["metadata"] = self.metadata
        outer["state"] = inner
        return jsonio.dumps(outer).encode()

    def send(self, data: bytes, listener_fd: int) -> None:
        """Hand the listener fd to the agent. This runs under the filter, so it makes as
        few syscalls as it can: it closes nothing (both fds are close-on-exec)."""
        try:
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", listener_fd))]
            sent = self.sock.sendmsg([data], rights)  # EINTR is retried (PEP 475)
            while sent < len(data):
                sent += self.sock.send(data[sent:])
        except OSError as exc:
            raise OcirtError(f"cannot send seccomp fd to {self.path}: "
                             f"{errno_text(exc.errno or 0)} (the profile must allow "
                             "sendmsg for SCMP_ACT_NOTIFY)") from None

    def close(self) -> None:
        self.sock.close()


class Filter:
    """An exported BPF program and the seccomp(2) flags to load it with."""

    def __init__(self, program: bytes, flags: int, listener: Listener | None = None) -> None:
        self.program = program
        self.flags = flags
        self.listener = listener

    def __len__(self) -> int:
        """Instructions in the program."""
        return len(self.program) // 8

    def fds(self) -> list[int]:
        """The fds the container's process must keep until install() (the agent socket)."""
        return [self.listener.fileno()] if self.listener is not None else []

    def install(self, state: dict[str, Any] | None = None, pid: int | None = None) -> None:
        """Load the filter into the calling process (the last step before execve: every
        syscall after this one is filtered). `state` is the runtime-spec state of the
        container, `pid` the process's PID as the runtime sees it (default: state's pid);
        both go to the notify agent, if there is one."""
        data = b""
        if self.listener is not None:
            data = self.listener.message(state or {}, pid)
        try:
            fd = libc.seccomp_set_mode_filter(self.flags, self.program)
        except OSError as exc:
            raise OcirtError(f"error loading seccomp filter into kernel: "
                             f"{errno_text(exc.errno or 0)}") from None
        if self.listener is not None:
            self.listener.send(data, fd)

    def close(self) -> None:
        """Drop the agent connection (the runtime's copy, once the child has its own)."""
        if self.listener is not None:
            self.listener.close()

