"""The allocator setting (``convfilt.memory``), in real processes: the library leaves it alone
until asked, the command line asks, it is applied once, it stops the page faults it exists
for, and ``CONVFILT_MALLOC=system`` turns it off."""

from __future__ import annotations

import platform

import pytest

from .processes import python_script

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are glibc's",
)

# transforms of 512², then 768²: with glibc's own (dynamic) thresholds every 768² call
# faults its blocks back in (~3000 faults a call measured); once they are fixed, none do
FAULTS = """
import resource, numpy as np
from convfilt import engine, memory
imported = list(memory._applied)  # importing the engine changes nothing process-wide
opted = memory.retain_freed_blocks()
rng = np.random.default_rng(0)
for size in (512, 768):
    x, k = rng.random((size, size)).astype(np.float32), rng.random((9, 9))
    engine.correlate(x, k, strategy="fft")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        engine.correlate(x, k, strategy="fft")
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(imported, opted, memory.retain_freed_blocks(), faults)
"""


def run(script: str, **env: str) -> list[str]:
    """Words a fresh interpreter prints running ``script`` with ``env`` added."""
    return python_script(script, **env).stdout.split()


@glibc_only
def test_the_opt_in_sets_the_thresholds_once_and_stops_the_faults() -> None:
    imported, opted, again, faults = run(FAULTS, CONVFILT_MALLOC="")
    assert (imported, opted, again) == ("[]", "True", "True")  # once: the same answer
    system = run(FAULTS, CONVFILT_MALLOC="system")
    if int(system[-1]) < 1000:
        pytest.skip(f"this glibc does not fault here by itself ({system[-1]} faults)")
    assert int(faults) < 100 < int(system[-1])


def test_convfilt_malloc_system_leaves_the_allocator_alone() -> None:
    imported, opted, again, _ = run(FAULTS, CONVFILT_MALLOC="system")
    assert (imported, opted, again) == ("[]", "False", "False")


ENTRY_POINT = """
import sys
from convfilt import cli, memory
sys.argv = ["convfilt", "--help"]
try:
    cli.main()
except SystemExit:
    pass
print(memory._applied)
"""


@glibc_only
def test_the_command_line_entry_point_opts_in() -> None:
    assert python_script(ENTRY_POINT, CONVFILT_MALLOC="").stdout.split()[-1] == "[True]"
