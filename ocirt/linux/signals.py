"""Signal names and numbers (Linux x86/arm numbering), without importing `signal`.

`import signal` costs ~3 ms (it builds enums), and `ocirt kill` runs on every container
stop. runc accepts `KILL`, `SIGKILL`, `kill` and `9`; so do we, plus `RTMIN+n`/`RTMAX-n`.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20,
    "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27,
    "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN = 34
SIGRTMAX = 64
SIGKILL, SIGTERM, SIGCHLD, SIGWINCH, SIGURG, SIGCONT = 9, 15, 17, 28, 23, 18


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """pidfd_send_signal(2) through the interpreter's own built-in _signal (no ctypes on
    the `kill` path); OSError as the kernel reports it."""
    import _signal

    _signal.pidfd_send_signal(pidfd, sig)


def kill_and_reap(*pids: int) -> None:
    """SIGKILL our children `pids` (0 for none), then reap them in reverse order: the
    undo step of a failed create or exec."""
    for pid in pids:
        if pid > 0:
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
    for pid in reversed(pids):
        if pid > 0:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def parse_signal(text: str) -> int:
    """Number for a signal given as a name (any case, with or without SIG) or a number."""
    raw = text.strip()
    # any number: the kernel says whether it is valid, as with runc
    if raw.isascii() and raw.isdigit():
        return int(raw)
    name = raw.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in SIGNALS:
        return SIGNALS[name]
    for base, start, sign in (("RTMIN", SIGRTMIN, 1), ("RTMAX", SIGRTMAX, -1)):
        if name == base:
            return start
        if name.startswith(base) and name[len(base):len(base) + 1] in "+-":
            offset = name[len(base) + 1:]
            if offset.isascii() and offset.isdigit():
                num = start + sign * int(offset)
                if SIGRTMIN <= num <= SIGRTMAX:
                    return num
    raise OcirtError(f'unknown signal "{text}"')


def signal_name(num: int) -> str:
    for name, value in SIGNALS.items():
        if value == num:
            return "SIG" + name
    if SIGRTMIN <= num <= SIGRTMAX:
        return f"SIGRTMIN+{num - SIGRTMIN}"
    return str(num)
