"""The ``convfilt`` command line: thin Typer commands over the library.

Each command parses its options, calls the library and renders the result; no numerics live
here. numpy, scipy and Pillow are imported inside the commands so that ``convfilt --help``
starts fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from . import report
from .errors import ConvfiltError

app = typer.Typer(
    name="convfilt",
    help="Image filtering by the cheapest exact road: direct, separable or FFT convolution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library failures into a one-line message and the contract's exit code."""
    try:
        yield
    except ConvfiltError as exc:
        report.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except MemoryError:
        report.error("out of memory; try a smaller image or --method fft/overlap-add")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        report.error("interrupted")
        raise typer.Exit(130) from None


class Mode(StrEnum):
    """Boundary modes, with scipy.ndimage's names and meanings."""

    reflect = "reflect"
    mirror = "mirror"
    nearest = "nearest"
    wrap = "wrap"
    constant = "constant"


class Method(StrEnum):
    """Convolution strategies; ``auto`` lets the planner choose."""

    auto = "auto"
    direct = "direct"
    separable = "separable"
    fft = "fft"
    overlap_add = "overlap-add"


ModeOption = Annotated[
    Mode, typer.Option("--mode", help="Boundary mode (scipy.ndimage names).", case_sensitive=False)
]
MethodOption = Annotated[
    Method, typer.Option("--method", help="Convolution strategy; auto picks the cheapest.")
]
ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print the planner's estimates and choice on stderr.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output file ('-' for stdout).")
]


def main() -> None:
    """Entry point for ``python -m convfilt`` and the console script."""
    app(prog_name="convfilt")


if __name__ == "__main__":  # pragma: no cover
    main()
