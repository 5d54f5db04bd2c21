"""sd_notify through the container (`podman run --sdnotify=container`), as runc does it.

When `create` (or `run`) finds NOTIFY_SOCKET in its environment, the container gets a
socket of its own: a directory under the state dir is bind-mounted read-only at
/run/notify and NOTIFY_SOCKET=/run/notify/notify.sock is added to the process's
environment. `start` binds that socket before the process runs and relays the
container's READY=1 to the host's NOTIFY_SOCKET, followed by MAINPID=<the container's
PID>, and returns then (or when the container exits first).
"""

from __future__ import annotations

import os

IN_CONTAINER = "/run/notify/notify.sock"
DIR_NAME = "notify"

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.spec.plan import Plan
    from ocirt.state import Container


def host_socket() -> str | None:
    """The caller's NOTIFY_SOCKET if it is a path (abstract sockets are not relayed)."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    return path if path.startswith("/") else None


def prepare(plan: Plan, state_dir: str) -> str | None:
    """Add the notify directory mount and the environment to `plan`; the host socket."""
    host = host_socket()
    if host is None or not plan.has_process or not plan.has("mount"):
        return None
    from ocirt.linux import consts as c
    from ocirt.spec.plan import Mount  # here: `start` imports this module, not the planner

    directory = os.path.join(state_dir, DIR_NAME)
    os.makedirs(directory, 0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    flags = c.MS_BIND | c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC
    plan.mounts.append(Mount(directory, os.path.dirname(IN_CONTAINER), "bind", flags, "", [],
                             0, 0, False, ["bind", "ro", "nosuid", "nodev", "noexec"]))
    plan.process.env = [e for e in plan.process.env if not e.startswith("NOTIFY_SOCKET=")]
    plan.process.env.append(f"NOTIFY_SOCKET={IN_CONTAINER}")
    return host


def listen(container: Container) -> object | None:
    """Bind the container's socket (before its process runs); None without sd_notify."""
    if not container.data.get("notify_socket"):
        return None
    import _socket

    path = os.path.join(container.dir, DIR_NAME, os.path.basename(IN_CONTAINER))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)  # any user of the container may report readiness
    return sock


def relay_ready(container: Container, sock: object) -> None:
    """Forward READY=1 (and MAINPID) to the host's socket once the container sends it."""
    import _socket
    import select

    host = container.data["notify_socket"]
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)  # type: ignore[attr-defined]
    try:
        while container.init_alive():
            if not poller.poll(200):
                continue
            data = sock.recv(4096)  # type: ignore[attr-defined]
            for line in data.split(b"\n"):
                if line.startswith(b"READY="):
                    out = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
                    try:
                        out.connect(host)
                        out.send(line + b"\n")
                        out.send(f"MAINPID={container.pid}\n".encode())
                    finally:
                        out.close()
                    return
    finally:
        sock.close()  # type: ignore[attr-defined]

