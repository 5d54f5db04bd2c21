"""OCI hooks: run one kind of hook with the container state on stdin.

Where each kind runs (runtime-spec config.md, "POSIX-platform Hooks"):
  prestart, createRuntime   `create`, runtime namespace, after the mounts, before pivot_root
  createContainer           the init, container namespaces, before pivot_root
  startContainer            `start`, joining the container (ocirt.runtime.exec), before
                            it releases the waiting init to exec the user process
  poststart                 `start`, runtime namespace, after the user process started
  poststop                  `delete`, runtime namespace
Failure semantics follow runc 1.1+: a failing create-time hook fails `create` (and the
container is cleaned up), a failing poststart fails `start` after the container is
killed, and poststop failures are only logged.
"""

from __future__ import annotations

import os
import subprocess

from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


class HookError(OcirtError):
    pass


def run_hooks(kind: str, hooks: list[dict[str, Any]], state_json: str) -> None:
    """Run the hooks of `kind` in order; the first failure raises HookError."""
    for index, hook in enumerate(hooks):
        run_hook(kind, index, hook, state_json)


def run_hooks_warning(kind: str, hooks: list[dict[str, Any]], state_json: str) -> None:
    """Run every hook even when one fails (poststop): failures are only logged."""
    from ocirt import log

    for index, hook in enumerate(hooks):
        try:
            run_hook(kind, index, hook, state_json)
        except HookError as exc:
            log.warning(str(exc))


def run_hook(kind: str, index: int, hook: dict[str, Any], state_json: str) -> None:
    args = hook.get("args") or [hook["path"]]
    env = dict(item.split("=", 1) for item in hook.get("env") or [] if "=" in item)
    timeout = hook.get("timeout")
    where = f"error running {kind} hook #{index} ({hook['path']})"
    try:
        proc = subprocess.Popen(
            args, executable=hook["path"], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, cwd="/",
        )
    except OSError as exc:
        raise HookError(f"{where}: {os.strerror(exc.errno or 0).lower()}") from None
    try:
        out, err = proc.communicate(state_json.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise HookError(f"{where}: hook ran past specified timeout of {timeout}s") from None
    except BrokenPipeError:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise HookError(failure(where, proc.returncode, out, err))


def failure(where: str, returncode: int, out: bytes, err: bytes) -> str:
    """runc's message for a hook that exited non-zero (or was killed: negative)."""
    status = f"exit status {returncode}" if returncode > 0 else f"signal: {-returncode}"
    return f"{where}: {status}, stdout: {_text(out)}, stderr: {_text(err)}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[-400:]


def hook_state(container_id: str, status: str, pid: int, bundle: str,
               annotations: dict[str, str], oci_version: str) -> str:
    """The state JSON hooks read on stdin (runtime-spec "State")."""
    from ocirt import jsonio

    state: dict[str, Any] = {"ociVersion": oci_version, "id": container_id, "status": status,
                             "pid": pid, "bundle": bundle}
    if annotations:
        state["annotations"] = annotations
    return jsonio.dumps(state)
