"""Terminal output: Rich consoles, tables, progress and JSON.

Results go to stdout, chatter (progress, messages, ``--explain``) to stderr, so that
``convfilt match ... --json | jq`` always sees clean output.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from .engine import Plan


@cache
def stdout() -> Console:
    """The console for results."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False)


@cache
def stderr() -> Console:
    """The console for progress, messages and explanations."""
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


def error(message: str) -> None:
    """Print a one-line error message on stderr."""
    line = " ".join(str(message).split())
    print(f"convfilt: error: {line}", file=sys.stderr)


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout (plain, so it parses whatever the terminal)."""
    sys.stdout.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def explain(plan: Plan) -> None:
    """Print the planner's estimates and its choice on stderr (``--explain``)."""
    from rich.table import Table

    table = Table(title=f"plan: {plan.reason}", title_justify="left")
    table.add_column("strategy")
    table.add_column("estimate", justify="right")
    for name, seconds in sorted(plan.estimates.items(), key=lambda kv: kv[1]):
        mark = " (chosen)" if name == plan.strategy else ""
        table.add_row(f"{name}{mark}", f"{seconds * 1e3:.2f} ms")
    stderr().print(table)
