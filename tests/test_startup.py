"""Start-up cost of the CLI: ``convfilt --help`` must not import the numeric stack.

Wall time is measured in ``make bench`` (benchmarks/run.py), not asserted here.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "scipy", "PIL")


def imported_modules(*args: str) -> set[str]:
    """Top-level module names imported by ``python -m convfilt ARGS`` (from -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convfilt", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_does_not_import_numeric_stack() -> None:
    modules = imported_modules("--help")
    assert "typer" in modules  # the parse worked and saw real imports
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_command_help_does_not_import_numeric_stack() -> None:
    for command in ("blur", "sharpen", "convolve", "match", "bench", "calibrate"):
        modules = imported_modules(command, "--help")
        assert not modules & set(HEAVY), (command, sorted(modules & set(HEAVY)))
