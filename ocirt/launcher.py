"""`python -m ocirt.launcher DEST`: write a fast, isolated `ocirt` executable to DEST.

Engines start the runtime for every create, start, exec, kill, delete and state, so the
interpreter's own start-up is a large part of each call. Half of it is the `site` module:
it reads every `.pth` file in every site directory (setuptools' distutils hack,
namespace-package shims, whatever else a machine has installed) on every run. The
launcher runs Python with `-I -S` and instead appends the site directories this
interpreter uses, resolved once, now: on the development machine `ocirt state` went
from 13 ms to 8 ms.

`-I` also makes ocirt immune to the caller's PYTHONPATH, PYTHONHOME and friends: a
runtime started as root by an engine must not import code from wherever its caller's
environment points.

contrib/setup.sh installs /usr/local/bin/ocirt this way. `pip install` cannot: it writes
its own interpreter path on the #! line of the script it installs (bin/ocirt) and drops
any flags there, so that script would pay for `site` on every call. Instead the script
turns itself into this launcher on its first run (`upgrade`), when the file belongs to
whoever runs it; where it cannot, it keeps working as it is, only slower to start.
"""

from __future__ import annotations

import os
import subprocess
import sys

TEMPLATE = """#!{python} -IS
# ocirt, written by `python -m ocirt.launcher`: Python without the site module and
# without its environment variables; the site directories below were resolved when
# this file was written. Re-run contrib/setup.sh (or the command above) after moving
# the installation.
import sys

sys.path += {paths!r}
from ocirt.cli import run_and_exit

run_and_exit()
"""


def site_paths(python: str = sys.executable) -> list[str]:
    """The directories `python` searches beyond its standard library: its sys.path minus
    what it has under -I -S, with the directory holding its ocirt package first (an
    editable install puts it there through a .pth finder the launcher skips). All of it
    as `python -I` sees it, never through the caller's PYTHONPATH."""
    bare, _ = _sys_path(python, "-I", "-S")
    full, package = _sys_path(python, "-I")
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.dirname(os.path.dirname(package) if package else here)]
    for path in full:
        if path and path not in bare and path not in paths and os.path.isdir(path):
            paths.append(path)
    return paths


_PROBE = """import sys
try:
    import ocirt
    where = ocirt.__file__
except ImportError:
    where = ""
print(repr((sys.path, where)))
"""


def _sys_path(python: str, *flags: str) -> tuple[list[str], str]:
    """sys.path of `python` run with `flags`, and where its ocirt package is ("" if none)."""
    out = subprocess.run([python, *flags, "-c", _PROBE], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    import ast

    path, where = ast.literal_eval(out)
    return list(path), str(where)


def write(dest: str, python: str = sys.executable) -> None:
    """Write the launcher atomically (a running engine may be executing the old one)."""
    if any(ch.isspace() for ch in python):
        raise OSError(f"{python}: an interpreter path with spaces cannot be a #! line")
    text = TEMPLATE.format(python=python, paths=site_paths(python))
    tmp = f"{dest}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


def upgrade(script: str) -> None:
    """Replace the script `pip install` wrote (run as `script`, with `site`) by the
    launcher, once: only the file's owner does it, only after the new launcher has run
    `--version`, atomically. Any failure leaves the script as it was: it still works."""
    path = os.path.realpath(script)
    staged = f"{path}.launcher.{os.getpid()}"
    try:
        if os.stat(path).st_uid != os.geteuid() or not os.access(os.path.dirname(path),
                                                                 os.W_OK):
            return
        write(staged)
        check = subprocess.run([staged, "--version"], capture_output=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        if check.returncode == 0:
            os.replace(staged, path)
    except (OSError, ValueError, SyntaxError, subprocess.SubprocessError):
        pass
    finally:
        try:
            os.unlink(staged)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m ocirt.launcher DEST\n")
        return 2
    try:
        write(argv[0])
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.stderr.write(f"ocirt.launcher: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
