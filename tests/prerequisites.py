"""What a test does when a tool it needs (Redis, Chromium) is not installed."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing_prerequisite(reason: str) -> NoReturn:
    """Skip with the reason on a developer's machine; fail under CI, so that CI cannot pass by
    skipping the tests that need the tool."""
    if under_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
