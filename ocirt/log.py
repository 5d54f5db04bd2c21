"""Logging in runc's formats, configured once by the global `--log`/`--log-format` flags.

Engines depend on the exact shapes (see docs on engines): with `--log FILE --log-format
json` every message is one line `{"level":"...","msg":"...","time":"<RFC3339>"}`, the file
is always created, a fatal error writes exactly one `error` line, and the bare message
also goes to stderr. Without `--log`, messages go to stderr in logrus' text format, as
runc prints them.
"""

from __future__ import annotations

import os
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_state = {"fd": 2, "to_file": False, "format": "text", "level": LEVELS["warning"]}


def configure(path: str | None, fmt: str, debug: bool) -> None:
    """Set up the log sink; creates the log file even if nothing is logged (containerd
    reads it after every failed call and reports a missing file as a separate error)."""
    from ocirt.errors import OcirtError

    if fmt not in ("text", "json"):
        raise OcirtError(f"invalid log-format: {fmt}")
    _state["format"] = fmt
    _state["level"] = LEVELS["debug"] if debug else LEVELS["info"]
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            from ocirt.errors import os_error_text

            raise OcirtError(f"open log file: {os_error_text(exc)}") from None
        _state["fd"], _state["to_file"] = fd, True


def logging_to_file() -> bool:
    return bool(_state["to_file"])


def log_fd() -> int:
    """The fd messages go to (the init sends its warnings back through its parent)."""
    return int(_state["fd"])


def timestamp() -> str:
    """RFC3339 in UTC with second precision, as runc's logrus writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def format_line(level: str, msg: str, fmt: str | None = None) -> str:
    from ocirt.jsonio import _string, dumps

    fmt = fmt or str(_state["format"])
    if fmt == "json":
        return dumps({"level": level, "msg": msg, "time": timestamp()}) + "\n"
    return f"time={_string(timestamp())} level={level} msg={_string(msg)}\n"


def emit(level: str, msg: str) -> None:
    if LEVELS[level] < int(_state["level"]):
        return
    _write(int(_state["fd"]), format_line(level, msg))


def emit_from_child(level: str, msg: str) -> None:
    """A log message the container's init or exec process sent over the sync socket
    (`on_log` of ocirt.process.protocol); an unknown level is logged as info."""
    emit(level if level in LEVELS else "info", msg)


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    except OSError:
        pass


def one_line(msg: str) -> str:
    """`msg` with line breaks and other control characters escaped: an error quoting a
    value from an image or a config file stays one line, whatever the value holds."""
    if msg.isprintable():
        return msg
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in msg)


def debug(msg: str) -> None:
    emit("debug", msg)


def info(msg: str) -> None:
    emit("info", msg)


def warning(msg: str) -> None:
    emit("warning", msg)


def error(msg: str) -> None:
    emit("error", msg)


def fatal(msg: str) -> None:
    """The one error line of a failed command; with a log file also the bare text on
    stderr, which podman falls back to and humans read."""
    msg = one_line(msg)
    emit("error", msg)
    if _state["to_file"]:
        _write(2, msg + "\n")
