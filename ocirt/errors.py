"""Errors a user can cause or must act on.

Every failure that is not a bug in ocirt is raised as an `OcirtError`: the CLI prints its
message as one line (no traceback) and exits with its `exit_code`, runc's code for the case.
Messages follow runc's wording where engines match on it (podman maps "no such file or
directory" to 127 and "permission denied" / "operation not permitted" to 126).
"""

from __future__ import annotations

import os


class OcirtError(Exception):
    """A failure reported as one line and an exit code."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(OcirtError):
    """Wrong command-line usage; the CLI adds the command's help, as runc does."""


class UnknownCommand(OcirtError):
    """runc exits 3 for an unknown command ("No help topic for 'x'")."""

    exit_code = 3


class ConfigError(OcirtError):
    """config.json (or a process.json) is invalid; the message names the field."""


class ContainerNotExist(OcirtError):
    def __init__(self) -> None:
        super().__init__("container does not exist")


class InvalidState(OcirtError):
    """An operation is not allowed in the container's current state."""


class SIFError(OcirtError):
    """A SIF file is unreadable or an operation on it is not possible; one line. Defined
    here, not in ocirt.sif.image, so that `create` can read a bundle's SIF record without
    importing the image code (hashlib, dataclasses: ~15 ms)."""


def errno_text(err: int) -> str:
    """strerror in Go's spelling ("no such file or directory"), which engines match on."""
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def os_error_text(exc: OSError) -> str:
    """`op path: reason` in the style of Go's os.PathError, from an OSError."""
    reason = errno_text(exc.errno) if exc.errno else str(exc)
    if exc.filename is not None:
        name = exc.filename
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        return f"{name}: {reason}"
    return reason


def syscall_error(op: str, err: int, path: str | None = None) -> OSError:
    """An OSError whose text reads `op path: reason` (e.g. `mount /proc: permission denied`)."""
    exc = OSError(err, errno_text(err))
    exc.filename = f"{op} {path}" if path is not None else op
    return exc
