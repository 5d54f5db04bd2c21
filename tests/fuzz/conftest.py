"""Property-based fuzzing (hypothesis) of everything that parses user or image input.

Two profiles: `ci` (the default: a few dozen examples per property, so the suite stays
quick on a shared 2-core machine) and `long` (thousands, for a fuzzing session, with
hypothesis' example database in .hypothesis/ so that failures replay). Choose with
OCIRT_FUZZ=long; OCIRT_FUZZ_EXAMPLES overrides the number of examples of either.
Every example runs under an alarm, so that a hang fails the property instead of stalling
the run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SHARED = {"suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture]}
_EXAMPLES = os.environ.get("OCIRT_FUZZ_EXAMPLES")

settings.register_profile(
    "ci", max_examples=int(_EXAMPLES or 40), deadline=None, database=None,
    print_blob=True, **_SHARED)
settings.register_profile(
    "long", max_examples=int(_EXAMPLES or 5000), deadline=None, print_blob=True, **_SHARED)
settings.load_profile(os.environ.get("OCIRT_FUZZ", "ci"))
