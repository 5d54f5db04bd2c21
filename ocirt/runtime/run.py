"""`run`: create + start, and in the foreground wait for the container and exit with its
status (128+n for a signal), forwarding signals to it, as runc does.

In the foreground ocirt is a child subreaper, so the container's init (whose parent, the
intermediate, has exited) is its child: it can wait for it and forward signals. With a
terminal and no --console-socket, ocirt takes the pty master itself and relays between
it and its own stdio.
"""

from __future__ import annotations

import os

from ocirt import log
from ocirt.errors import OcirtError
from ocirt.runtime.create import CreateOptions, create
from ocirt.runtime.start import start
from ocirt.state import Container, Store


def run(store: Store, cid: str, opts: CreateOptions, detach: bool, keep: bool) -> int:
    from ocirt.runtime.create import load_plan
    from ocirt.state import validate_id

    validate_id(cid)
    loaded = load_plan(opts.bundle, opts)
    terminal = loaded[0].process.terminal
    if detach:
        if terminal and not opts.console_socket:
            raise OcirtError("cannot allocate tty if ocirt will detach without setting "
                             "console socket")
        container = create(store, cid, opts, loaded)
        _start_or_destroy(store, container)
        return 0
    from ocirt.runtime.foreground import (  # not for `run -d`, the engines' way
        SignalForwarder,
        receive_master,
        socketpair,
        wait_and_relay,
    )

    relay_end = console = -1
    if not opts.console_socket and terminal:
        from ocirt.runtime.tty import host_console

        console = host_console()  # before anything exists: runc's check
        relay_end, opts.console_fd = socketpair()
    try:
        container = create(store, cid, opts, loaded)
    finally:
        if opts.console_fd >= 0:
            os.close(opts.console_fd)
            opts.console_fd = -1
    master = -1
    try:
        if relay_end >= 0:
            master = receive_master(relay_end)
        forwarder = SignalForwarder(container.pid, master, console)
        _start_or_destroy(store, container)
        status = wait_and_relay(container.pid, master, forwarder)
    finally:
        if relay_end >= 0:
            os.close(relay_end)
    if not keep:
        from ocirt.runtime.delete import destroy

        try:
            with store.lock(cid):
                destroy(store, store.load(cid))
        except OcirtError as exc:
            log.warning(f"delete after run: {exc}")
    return status


def _start_or_destroy(store: Store, container: Container) -> None:
    try:
        start(store, container.id)
    except BaseException:
        from ocirt.runtime.delete import delete

        try:
            delete(store, container.id, force=True)
        except OcirtError as exc:
            log.warning(f"cleanup after failed start: {exc}")
        raise
