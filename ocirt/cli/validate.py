"""Handler for `validate`: check a bundle's config.json against the runtime-spec schema."""

from __future__ import annotations

import sys

from ocirt.cli.parser import Options

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only

if TYPE_CHECKING:
    from ocirt.cli import Globals


def validate(g: Globals, opts: Options, args: list[str]) -> int:
    """Print one line per problem and exit 1, or "config.json is valid" and exit 0."""
    from ocirt.spec.validate import validate_bundle

    found = validate_bundle(opts.bundle)
    if found:
        sys.stdout.write("".join(f"{line}\n" for line in found))
        return 1
    sys.stdout.write("config.json is valid\n")
    return 0
