"""Test-wide settings: in CI (CI=true) hypothesis runs derandomized, so a red run repeats; the
cost constants and numba's cache live in a folder of this run's own, so constants a user
stored with `convfilt calibrate` on this machine cannot change which road a test's plan takes."""

from __future__ import annotations

import os
import tempfile

from hypothesis import settings

os.environ["CONVFILT_CACHE_DIR"] = tempfile.mkdtemp(prefix="convfilt-tests-")

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
