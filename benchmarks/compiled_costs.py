"""The compiled road's one-time costs, each measured in a fresh process (issue 14).

Run ``.venv/bin/python -m benchmarks.compiled_costs [runs]``: per run, a fresh interpreter with
an empty numba cache (``NUMBA_CACHE_DIR`` a new folder) imports the kernels and compiles the
direct form for float32 (a cold cache), then a second one imports and loads that machine code
(a warm cache). Prints the medians and every sample (seconds) as JSON: the constants
``compiled_import``, ``compiled_load`` and ``compiled_jit`` of ``cost_defaults.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

SCRIPT = """
import time
import numpy as np
from convfilt import compiled, engine
t0 = time.perf_counter()
compiled._kernels()
t1 = time.perf_counter()
x = np.zeros((64, 64, 1), np.float32)
rows = engine.extension_indices(64, 1, 1, "reflect")
k = np.ones((3, 3), np.float32) + np.eye(3, dtype=np.float32)
compiled.correlate(x, rows, rows, 1, 0.0, k, np.empty_like(x))
print(t1 - t0, time.perf_counter() - t1)
"""


def _run(environ: dict[str, str]) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environ, capture_output=True, text=True, check=True
    )
    return [float(value) for value in done.stdout.split()]


def main(argv: list[str] | None = None) -> None:
    runs = int((argv if argv is not None else sys.argv[1:] or ["3"])[0])
    imports, loads, jits = [], [], []
    for _ in range(runs):
        environ = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="numba-cold-"))
        first, jit = _run(environ)  # cold cache: compiles
        second, load = _run(environ)  # warm cache: loads
        imports += [first, second]
        loads.append(load)
        jits.append(jit)
    medians = {
        k: statistics.median(v) for k, v in (("import", imports), ("load", loads), ("jit", jits))
    }
    print(json.dumps({**medians, "imports": imports, "loads": loads, "jits": jits}))


if __name__ == "__main__":
    main()
