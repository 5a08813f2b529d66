"""Test-wide settings: in CI (CI=true) hypothesis runs derandomized, so a red run repeats."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
