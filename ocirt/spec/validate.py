"""Checking runtime-spec documents against ocirt's JSON schemas (the top-level schemas/).

This is for `ocirt validate` and the tests, never for create/start: jsonschema costs about
70 ms to import, which engines would pay on every container. The conversion into a plan
(`ocirt.spec.plan`) does its own, cheaper checks on the hot path.

The schemas are plain files. In a source tree (and an editable install) they sit next to
the package; a built wheel installs them as data files under `<prefix>/share/ocirt/schemas`,
which we find through the distribution's file list so that any install scheme works.
"""

from __future__ import annotations

import functools
import os

from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# What each kind of document is checked against.
SCHEMA_FILES = {
    "config": "config.schema.json",
    "process": "process.schema.json",
    "resources": "resources.schema.json",
    "state": "state.schema.json",
    "features": "features.schema.json",
}
_MARKER = SCHEMA_FILES["config"]
_DATA_DIR = ("share", "ocirt", "schemas")


def schema_dir() -> str:
    """The directory holding the schema files, in a source tree or an installation."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    source = os.path.join(package_parent, "schemas")
    if os.path.isfile(os.path.join(source, _MARKER)):
        return source
    installed = _installed_schema_dir()
    if installed:
        return installed
    raise OcirtError(f"schemas: {_MARKER} not found (looked in {source} and the ocirt "
                     "installation's share/ocirt/schemas)")


def _installed_schema_dir() -> str | None:
    """Where pip put the data files, read from the distribution's RECORD."""
    from importlib import metadata

    try:
        dist = metadata.distribution("ocirt")
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        parts = entry.parts
        if parts[-1] == _MARKER and tuple(parts[-4:-1]) == _DATA_DIR:
            path = os.path.dirname(os.path.normpath(str(dist.locate_file(entry))))
            if os.path.isfile(os.path.join(path, _MARKER)):
                return path
    return None


def _read_schema(directory: str, name: str) -> dict[str, Any]:
    from ocirt.spec.load import read_json_file

    return read_json_file(os.path.join(directory, name), f"schema {name}")


@functools.cache
def registry() -> Any:
    """Every schema file, registered under its file name, so that the relative references
    between them (`defs.schema.json#/$defs/uint32`) resolve without any network access."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    directory = schema_dir()
    resources = [
        (name, Resource.from_contents(_read_schema(directory, name),
                                      default_specification=DRAFT202012))
        for name in sorted(os.listdir(directory)) if name.endswith(".schema.json")
    ]
    return Registry().with_resources(resources)


@functools.cache
def validator(kind: str) -> Any:
    """A jsonschema validator for one kind of document ("config", "state", ...)."""
    from jsonschema import Draft202012Validator

    if kind not in SCHEMA_FILES:
        raise OcirtError(f"no schema for {kind!r} (known: {', '.join(SCHEMA_FILES)})")
    try:
        schemas = registry()
    except ImportError:  # jsonschema < 4.18 (Debian 12 ships 4.10): its RefResolver
        return _legacy_validator(SCHEMA_FILES[kind])
    return Draft202012Validator(schemas[SCHEMA_FILES[kind]].contents, registry=schemas)


def _legacy_validator(name: str) -> Any:
    """The same validator for jsonschema before `referencing`: a RefResolver whose store
    holds every schema under its file name."""
    from jsonschema import Draft202012Validator, RefResolver

    directory = schema_dir()
    store = {n: _read_schema(directory, n) for n in sorted(os.listdir(directory))
             if n.endswith(".schema.json")}
    resolver = RefResolver(base_uri=name, referrer=store[name], store=store)
    return Draft202012Validator(store[name], resolver=resolver)


def problems(document: Any, kind: str, name: str | None = None) -> list[str]:
    """One line per schema violation, `<json path>: <what is wrong>`, sorted by path.

    `name` stands for the whole document when the problem is at its top level.
    """
    errors = validator(kind).iter_errors(document)
    ordered = sorted(errors, key=lambda e: (_sort_key(e.absolute_path), e.message))
    where_top = name or f"{kind}.json"
    return [describe(e, where_top) for e in ordered]


def validate_bundle(bundle: str) -> list[str]:
    """The problems of a bundle's config.json (missing or malformed JSON raises)."""
    from ocirt.spec.load import CONFIG_NAME, read_json_file, resolve_bundle

    path = os.path.join(resolve_bundle(bundle), CONFIG_NAME)
    document = read_json_file(path, CONFIG_NAME)
    return content_problems(document) + problems(document, "config", CONFIG_NAME)


def content_problems(document: Any) -> list[str]:
    """What `create` refuses before any schema: NUL bytes, lone surrogates, nesting."""
    from ocirt.spec.plan import check_strings

    try:
        check_strings(document, "")
    except OcirtError as exc:
        return [exc.message]
    return []


def describe(error: ValidationError, top: str) -> str:
    """`process.user.uid: -1 is less than the minimum of 0`."""
    error, message = _explain(error)
    return f"{json_path(error.absolute_path) or top}: {message}"


def _explain(error: ValidationError) -> tuple[ValidationError, str]:
    """The most specific error and its message.

    anyOf/oneOf failures say only "not valid under any of the given schemas"; when every
    branch just requires a property, say which properties; otherwise descend into the
    branch jsonschema judges closest.
    """
    from jsonschema.exceptions import best_match

    while error.context:
        missing = _required_alternatives(error)
        if missing:
            return error, "needs at least one of " + ", ".join(repr(m) for m in missing)
        inner = best_match(error.context)
        if inner is None:
            break
        error = inner
    if error.validator == "pattern" and isinstance(error.schema, dict) \
            and "title" in error.schema:
        # A regular expression says little to a reader; every schema with a pattern has
        # a title that completes "<value> is not ...".
        return error, f"{error.instance!r} is not {error.schema['title']}"
    if error.validator == "minItems" and error.validator_value == 1:
        # the same words whatever jsonschema's version ("is too short" before 4.21)
        return error, f"{error.instance!r} should be non-empty"
    return error, error.message


def _required_alternatives(error: ValidationError) -> list[str]:
    if error.validator not in ("anyOf", "oneOf"):
        return []
    branches = error.validator_value
    if not all(set(b) == {"required"} and len(b["required"]) == 1 for b in branches):
        return []
    return [b["required"][0] for b in branches]


def json_path(parts: Any) -> str:
    """`mounts[2].destination`; keys that are not plain words are quoted:
    `annotations["io.kubernetes.cri-o.TTY"]`."""
    from ocirt.jsonio import path_text

    return path_text(parts)


def _sort_key(parts: Any) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in parts)
