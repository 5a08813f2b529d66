"""The allocator setting: applied once per process, skipped on request (real processes)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = "from convfilt import engine, memory; print(memory._applied)"


def run(env: dict[str, str]) -> str:
    """What a fresh interpreter reports after importing the engine, with ``env`` added."""
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are glibc's",
)
def test_engine_import_sets_the_glibc_thresholds_once() -> None:
    assert run({"CONVFILT_MALLOC": ""}) == "[True]"


def test_convfilt_malloc_system_leaves_the_allocator_alone() -> None:
    assert run({"CONVFILT_MALLOC": "system"}) == "[False]"
