"""python -m tests.hosts build|run [--kind KIND] [--keep DIR] [--timeout S] [-- COMMAND...]

`build` makes (or finds) the kind's cached image; `run` boots it and runs COMMAND in a
copy of this checkout as root, printing its output and exiting with its status."""

from __future__ import annotations

import argparse
import sys

from tests.hosts import KINDS, build, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts")
    parser.add_argument("action", choices=["build", "run"])
    parser.add_argument("--kind", default="debian12-v2", choices=sorted(KINDS))
    parser.add_argument("--keep", help="copy the guest's output and console log here")
    parser.add_argument("--timeout", type=float, default=3600)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1:]
    kind = KINDS[args.kind]
    if args.action == "build":
        print(build(kind))
        return 0
    command = " ".join(args.command)
    if not command:
        parser.error("run needs a command after --")
    rc, output = run(kind, command, timeout=args.timeout, keep=args.keep)
    sys.stdout.write(output)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
