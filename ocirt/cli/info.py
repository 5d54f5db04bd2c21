"""Handlers for `spec` and `features`."""

from __future__ import annotations

import os
import sys

from ocirt.cli.parser import Options
from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.cli import Globals


def spec(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.jsonio import dumps_pretty
    from ocirt.spec.template import default_spec

    bundle = opts.bundle or "."
    if not os.path.isdir(bundle):
        raise OcirtError(f"chdir {bundle}: no such file or directory")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise OcirtError("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        f.write(dumps_pretty(default_spec(opts.rootless), "\t"))
    return 0


def features(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.jsonio import dumps_pretty
    from ocirt.spec.features import features as build

    sys.stdout.write(dumps_pretty(build(), "    ") + "\n")
    return 0
