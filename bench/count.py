"""Run one ocirt command and count what its process loads: modules and opened files.

    PYTHON [-I -S] bench/count.py REPORT SCRIPT [ARG ...]

SCRIPT is an ocirt entry (the launcher `python -m ocirt.launcher` writes, or the script
`pip install` puts on PATH); it runs as its #! line would run it, with an audit hook
installed first. When the command's own process ends (os._exit, as ocirt's CLI always
leaves), one JSON line goes to REPORT: every module in sys.modules, the files opened
(the audit `open` event: .pyc files, config.json, state.json, /proc and cgroup files)
and the directories listed. Forked children (intermediate, init) are not counted: they
inherit the hook but report nothing. Interpreter start-up (and `site`, for the pip
script) happens before the hook and is counted in modules only.
"""

from __future__ import annotations

import os
import sys

REPORT, SCRIPT = sys.argv[1], sys.argv[2]
ME = os.getpid()
OPENED: list[str] = []
LISTED: list[str] = []


def _hook(event: str, args: tuple) -> None:
    if event == "open" and os.getpid() == ME and isinstance(args[0], (str, bytes)):
        OPENED.append(os.fsdecode(args[0]))
    elif event in ("os.listdir", "os.scandir") and os.getpid() == ME:
        LISTED.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else "?")


_real_exit = os._exit


def _exit(code: int) -> None:
    if os.getpid() == ME:
        # Taken before json below adds its own modules and files.
        found = {"modules": sorted(sys.modules), "opened": list(OPENED), "listed": list(LISTED)}
        import json

        line = json.dumps(found)
        fd = os.open(REPORT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.write(fd, line.encode() + b"\n")
        os.close(fd)
    _real_exit(code)


def main() -> None:
    with open(SCRIPT, "rb") as f:
        source = f.read()
    sys.argv = [SCRIPT, *sys.argv[3:]]
    sys.addaudithook(_hook)
    os._exit = _exit  # type: ignore[assignment]
    code = compile(source, SCRIPT, "exec")
    try:
        exec(code, {"__name__": "__main__", "__file__": SCRIPT})
    except SystemExit as exc:
        _exit(exc.code if isinstance(exc.code, int) else 1)
    _exit(0)


main()
