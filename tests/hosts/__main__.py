"""python -m tests.hosts build|run [--kind KIND] [--keep DIR] [--timeout S] [--share DIR]...
                                  [-- COMMAND...]

`build` makes (or finds) the kind's cached image; `run` boots it and runs COMMAND in a
copy of this checkout as root, printing its output and exiting with its status. COMMAND
is one sh command line; what it writes under $OCIRT_HOST_OUT (e.g. pytest --junitxml)
is copied to --keep. Each --share DIR is mounted read-only at /mnt/shares/<DIR's name>
in the guest (the guest has no network: tools from outside the checkout come this way);
each --sibling DIR at /<DIR's name>, i.e. ../<name> of the guest's copy of the checkout."""

from __future__ import annotations

import argparse
import sys

from tests.hosts import KINDS, build, run


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """The harness's own options and the guest command: everything after the first
    `--` is the command, so its options never reach argparse (and ours never reach it)."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts")
    parser.add_argument("action", choices=["build", "run"])
    parser.add_argument("--kind", default="debian12-v2", choices=sorted(KINDS))
    parser.add_argument("--keep", help="copy the guest's $OCIRT_HOST_OUT and console log here")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--share", action="append", default=[],
                        help="a host directory, read-only at /mnt/shares/<its name> in the guest")
    parser.add_argument("--sibling", action="append", default=[],
                        help="a host directory, read-only at /<its name> in the guest: beside "
                             "the guest's copy of the checkout, as ../<its name>")
    own, command = split_command(argv)
    args = parser.parse_args(own)
    kind = KINDS[args.kind]
    if args.action == "build":
        print(build(kind))
        return 0
    if not command:
        parser.error("run needs a command after --")
    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = run(kind, " ".join(command), timeout=args.timeout, keep=args.keep,
                 stream=stream, shares=args.share, siblings=args.sibling)
    if result.note:
        sys.stderr.write(result.note)
    return result.rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
