"""Run convfilt as a real process, the way a shell or a script does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest

FULL_DISK = Path("/dev/full")


def convfilt(
    *args: object, stdout: int | IO[Any] = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """``python -m convfilt ARGS`` in the current folder, its stderr (and stdout) captured."""
    return subprocess.run(
        [sys.executable, "-m", "convfilt", *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )


def python_script(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -c SCRIPT`` in a fresh interpreter with ``env`` added to the environment;
    fails the test if it exits non-zero (or runs past 120 s)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def convfilt_onto_full_disk(*args: object) -> subprocess.CompletedProcess[str]:
    """``convfilt ARGS`` with its stdout on /dev/full, where every write fails (ENOSPC)."""
    if not FULL_DISK.exists():
        pytest.skip("no /dev/full here")
    with FULL_DISK.open("wb") as full:
        return convfilt(*args, stdout=full)
