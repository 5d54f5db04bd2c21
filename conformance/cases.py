"""How a conformance case names itself: an ID, a spec reference and a requirement level.

    @case("LC-01", "runtime.md#create", "MUST")
    def test_create_does_not_run_args(h): '''create applies config but not process.args'''

The docstring's first line is the case title in the report. Levels: MUST, SHOULD, MAY
(RFC 2119 words of the runtime-spec, v1.3.0 unless the reference says otherwise),
RUNC for behaviour the spec leaves open and runc's CLI defines (engines depend on it),
and SEC for the hardening that the runtime CVEs of ../shared/docs/security.md call for.

`deviation(family, why)` records that a reference runtime knowingly departs from the
check; the case then counts as an expected failure for that runtime only (strict: if the
runtime starts passing, the case fails, so stale deviations are noticed). The check
itself is never bent. `needs(feature, ...)` labels what a case exercises beyond the
basic lifecycle (exec, pause, cgroups, seccomp, ...), so the report can group the
failures of a runtime that lacks a feature; it never skips anything.
"""

from __future__ import annotations

import pytest

LEVELS = ("MUST", "SHOULD", "MAY", "RUNC", "SEC")
FAMILIES = ("runc", "crun", "ocirt", "youki")

# The spec revision the references point into.
SPEC_VERSION = "v1.3.0"
SPEC_BASE = f"https://github.com/opencontainers/runtime-spec/blob/{SPEC_VERSION}/"


def case(cid: str, spec: str, level: str = "MUST") -> pytest.MarkDecorator:
    if level not in LEVELS:
        raise ValueError(f"case {cid}: level {level!r} not in {LEVELS}")
    return pytest.mark.case(cid, spec, level)


def deviation(family: str, why: str) -> pytest.MarkDecorator:
    if family not in FAMILIES:
        raise ValueError(f"deviation for unknown runtime family {family!r}")
    return pytest.mark.deviation(family, why)


def needs(*features: str) -> pytest.MarkDecorator:
    return pytest.mark.needs(*features)


def spec_url(ref: str) -> str | None:
    """A link for references into the runtime-spec (`file.md#anchor`), else None."""
    head = ref.split()[0] if ref else ""
    if head.endswith(".md") or ".md#" in head:
        return SPEC_BASE + head
    return None
