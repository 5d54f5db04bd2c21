"""Reading config.json (and process.json) with errors that name the file and position."""

from __future__ import annotations

import os

from ocirt import jsonio
from ocirt.errors import ConfigError, OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

CONFIG_NAME = "config.json"


def read_json_file(path: str, what: str | None = None) -> Any:
    """Parse a JSON file; a missing or malformed file is a one-line ConfigError."""
    what = what or path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"JSON specification file {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a JSON file") from None
    except OSError as exc:
        raise ConfigError(f"open {what}: {os.strerror(exc.errno or 0).lower()}") from None
    try:
        return jsonio.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{what}: invalid JSON: {exc}") from None


def resolve_bundle(bundle: str) -> str:
    """The absolute bundle directory (default: the current directory)."""
    path = os.path.abspath(bundle or ".")
    if not os.path.isdir(path):
        reason = "no such file or directory" if not os.path.exists(path) else "not a directory"
        raise OcirtError(f"chdir {path}: {reason}")
    return path


def load_config(bundle: str) -> dict[str, Any]:
    spec = read_json_file(os.path.join(bundle, CONFIG_NAME), CONFIG_NAME)
    if not isinstance(spec, dict):
        raise ConfigError(f"{CONFIG_NAME}: the top level must be a JSON object")
    return spec
