"""The cost model's constants as stored: shipped defaults, the environment, the cache file.

``cost`` is the model (pure: shapes and constants in, seconds out). This module is where its
constants come from: ``cost_defaults.json`` beside this file (shipped, produced by
``convfilt calibrate`` on the reference machine), or the file ``convfilt calibrate`` stores in
the user's cache folder (``$CONVFILT_CACHE_DIR``, ``$XDG_CACHE_HOME/convfilt`` or
``~/.cache/convfilt``), which later runs load instead. Measuring them runs the engine, so it
lives in ``bench`` (``bench.calibrate``), above the engine that reads them from here: the
imports go one way, bench -> engine -> calibration -> cost.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .cost import Constants

DEFAULTS_FILE = "cost_defaults.json"
CONSTANTS_FILE = "constants.json"

# --- stored constants --------------------------------------------------------------------------


def default_constants() -> Constants:
    """The constants shipped with convfilt (``cost_defaults.json``)."""
    # beside this module: importlib.resources would add imports to every start-up
    # (docs/performance.md, §5)
    text = Path(__file__).with_name(DEFAULTS_FILE).read_text(encoding="utf-8")
    return Constants.from_json(json.loads(text))


def constants_path() -> Path:
    """Where calibrated constants live: ``$CONVFILT_CACHE_DIR``, ``$XDG_CACHE_HOME/convfilt``
    or ``~/.cache/convfilt``, then ``constants.json``."""
    environ = os.environ
    return _constants_path(
        environ.get("CONVFILT_CACHE_DIR"), environ.get("XDG_CACHE_HOME"), environ.get("HOME")
    )


@lru_cache(maxsize=8)
def _constants_path(folder: str | None, xdg: str | None, _home: str | None) -> Path:
    """``constants_path`` for these variables (memoised: every plan asks, and building the
    path costs more than the planner's estimates)."""
    if folder:
        return Path(folder) / CONSTANTS_FILE
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "convfilt" / CONSTANTS_FILE


_loaded: dict[tuple[str, int, int], Constants] = {}


def load_constants() -> Constants:
    """Stored constants if the file exists and is valid, else the defaults."""
    return stored_constants() or _default_cached()


def stored_constants() -> Constants | None:
    """The constants stored at ``constants_path()``, or None if there is no file or it is not
    valid (damaged, or written by an older model that lacks a constant: ``calibrate`` again).

    Cached per (path, modification time, size), so the planner can call it on every plan.
    """
    path = constants_path()
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None
    if key not in _loaded:
        try:
            _loaded[key] = Constants.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
    return _loaded[key]


_defaults: list[Constants] = []


def _default_cached() -> Constants:
    if not _defaults:
        _defaults.append(default_constants())
    return _defaults[0]


def save_constants(constants: Constants) -> Path:
    """Write ``constants`` to ``constants_path()`` atomically; return the path."""
    path = constants_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(constants.to_json(), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def reset_constants() -> bool:
    """Delete stored constants (back to the defaults); True if there was a file."""
    try:
        constants_path().unlink()
    except FileNotFoundError:
        return False
    return True
