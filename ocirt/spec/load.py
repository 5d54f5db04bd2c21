"""Reading config.json (and process.json) with errors that name the file and position."""

from __future__ import annotations

import os

from ocirt import jsonio
from ocirt.errors import ConfigError, OcirtError, errno_text

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

CONFIG_NAME = "config.json"


# No runtime-spec document comes near this (podman's largest, with a seccomp profile, is
# ~60 kB); reading more would only let a hostile file make us allocate without bound.
MAX_JSON_BYTES = 16 << 20


def read_json_file(path: str, what: str | None = None, regular_only: bool = True) -> Any:
    """Parse a JSON file; a missing, malformed, oversized or non-regular file is a
    one-line ConfigError.

    The open never blocks: a FIFO would otherwise hang us until some writer appeared.
    `regular_only=False` lets pipes and character devices through (`exec --process
    /dev/stdin`); they are read as they come, up to the size limit.
    """
    what = what or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"JSON specification file {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"open {what}: {errno_text(exc.errno or 0)}") from None
    try:
        data = _read_limited(fd, what, regular_only)
    finally:
        os.close(fd)
    try:
        return jsonio.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{what}: invalid JSON: {exc}") from None


def _read_limited(fd: int, what: str, regular_only: bool) -> bytes:
    import stat

    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{what} is a directory, not a JSON file")
    if not stat.S_ISREG(mode):
        if regular_only or stat.S_ISBLK(mode):
            raise ConfigError(f"{what} is not a regular file")
        os.set_blocking(fd, True)
    chunks, size = [], 0
    try:
        while size <= MAX_JSON_BYTES:
            chunk = os.read(fd, MAX_JSON_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"read {what}: {errno_text(exc.errno or 0)}") from None
    if size > MAX_JSON_BYTES:
        raise ConfigError(f"{what}: larger than {MAX_JSON_BYTES >> 20} MiB")
    return b"".join(chunks)


def resolve_bundle(bundle: str) -> str:
    """The absolute bundle directory (default: the current directory)."""
    path = os.path.abspath(bundle or ".")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # the state file and root.path are UTF-8 JSON
        raise OcirtError(f"bundle {os.fsencode(path)!r}: the path is not UTF-8 text") \
            from None
    if not os.path.isdir(path):
        reason = "no such file or directory" if not os.path.exists(path) else "not a directory"
        raise OcirtError(f"chdir {path}: {reason}")
    return path


def load_config(bundle: str) -> dict[str, Any]:
    spec = read_json_file(os.path.join(bundle, CONFIG_NAME), CONFIG_NAME)
    if not isinstance(spec, dict):
        raise ConfigError(f"{CONFIG_NAME}: the top level must be a JSON object")
    return spec
