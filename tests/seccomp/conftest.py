"""Fixtures for the seccomp tests: profiles engines really send."""

from __future__ import annotations

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(REPO, "..", "shared", "fixtures", "engine-samples")


@pytest.fixture(scope="session")
def podman_seccomp() -> dict:
    """linux.seccomp of podman 4.3's default profile (`podman run`, runc 1.1.5 era)."""
    path = os.path.join(SAMPLES, "podman-run-create.config.json")
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing")
    with open(path) as f:
        return json.load(f)["linux"]["seccomp"]
