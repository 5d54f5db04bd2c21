"""`start`: run the startContainer hooks, release the waiting init through the exec
fifo, then run the poststart hooks.

The startContainer hooks run inside the container, through the `exec` machinery: the
init is the sealed trampoline by now, and no Python waits in the container to run them.

The init (the trampoline) holds the fifo open O_RDWR and blocks reading it. `start`
opens a reader of its own, then a writer, writes one byte, closes the writer, and waits
(poll with no events: only POLLHUP wakes it) until the last writer is gone, which
happens when the init's close-on-exec fd disappears in execve, or when the init dies.
What is left to read then tells the outcome: nothing (the init took the byte and
exec'd), the byte itself (the init died before taking it), or "X<errno>" (the
trampoline's execve failed).
Unlike runc, a failed exec is therefore reported by `start` itself.
"""

from __future__ import annotations

import os
import select

from ocirt import log
from ocirt.errors import OcirtError
from ocirt.state import FIFO_FILE, Container, Store, check_transition


def start(store: Store, cid: str) -> Container:
    from ocirt.runtime import notify

    with store.lock(cid):
        container = store.load(cid)
        check_transition("start", container.status(), cid)
        sd_notify = notify.listen(container)
        run_start_container(container, store.cache_dir("seccomp"))
        release_init(container)
    run_poststart(container)
    if sd_notify is not None:
        notify.relay_ready(container, sd_notify)
    return container


def run_start_container(container: Container, cache_dir: str | None) -> None:
    """The startContainer hooks, inside the container before its process runs; one that
    fails kills the container and fails `start` (runtime-spec: the container stops)."""
    hooks = (container.data.get("hooks") or {}).get("startContainer")
    if not hooks:
        return
    from ocirt.hooks import HookError, hook_state
    from ocirt.linux.proc import ns_pid
    from ocirt.runtime.exec import run_hook_inside

    state = hook_state(container.id, "created", ns_pid(container.pid), container.bundle,
                       container.data.get("annotations") or {},
                       container.data.get("ociVersion", ""))
    try:
        for index, hook in enumerate(hooks):
            run_hook_inside(container, "startContainer", index, hook, state, cache_dir)
    except HookError:
        _kill_after_failed_hook(container)
        raise


def release_init(container: Container) -> None:
    path = container.path(FIFO_FILE)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise OcirtError(f"open exec fifo: {exc.strerror}") from None
        try:
            os.write(writer, b"\0")
        finally:
            os.close(writer)
        poller = select.poll()
        poller.register(reader, 0)
        while not poller.poll():
            pass
        outcome = _read_all(reader)
    finally:
        os.close(reader)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if outcome.startswith(b"E"):
        raise OcirtError(outcome[1:].decode("utf-8", "replace"))
    if outcome.startswith(b"X"):
        from ocirt.process.trampoline import failure

        if not _has_process(container):
            raise OcirtError("the container has no process to start (config.json sets "
                             "none)")
        raise OcirtError(f"exec {_program(container)}: {failure(outcome)}")
    if outcome:
        raise OcirtError("container init exited before it could be started")


def _has_process(container: Container) -> bool:
    try:
        return container.config().get("process") is not None
    except (OSError, ValueError):
        return True


def _program(container: Container) -> str:
    try:
        return str(container.config()["process"]["args"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "the container process"


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def run_poststart(container: Container) -> None:
    """poststart hooks, in the runtime namespace, before `start` returns. Like runc 1.1+,
    a failing hook kills the container and fails `start`."""
    hooks = (container.data.get("hooks") or {}).get("poststart")
    if not hooks:
        return
    from ocirt.hooks import HookError, hook_state, run_hooks

    state = hook_state(container.id, "running", container.pid, container.bundle,
                       container.data.get("annotations") or {},
                       container.data.get("ociVersion", ""))
    try:
        run_hooks("poststart", hooks, state)
    except HookError:
        _kill_after_failed_hook(container)
        raise


def _kill_after_failed_hook(container: Container) -> None:
    """A failed startContainer or poststart hook ends the container; the hook's error
    is what the caller reports, so a kill that fails is only a warning."""
    from ocirt.runtime.kill import signal_init

    try:
        signal_init(container, 9)
    except OcirtError as exc:
        log.warning(str(exc))
