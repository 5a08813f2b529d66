"""Terminal output: Rich consoles, tables, progress and JSON.

Results go to stdout, chatter (progress, messages, ``--explain``) to stderr, so that
``convfilt match ... --json | jq`` always sees clean output.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import names

if TYPE_CHECKING:
    from rich.box import Box
    from rich.console import Console
    from rich.table import Table

    from .bench import BenchResult, CellRecord
    from .deconvolution import Report
    from .engine import Plan
    from .kernels import KernelFacts
    from .matching import Match


class CheckedStdout:
    """A text stream over stdout whose every write is checked (:func:`images.write_stdout`).

    A buffered ``sys.stdout`` can lose a short write (a full disk, a file size limit) and the
    program would still exit 0; results written through this stream fail with one line instead.
    ``sys.stdout`` is looked up at each write, so tests can swap it.
    """

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        from .images import write_stdout

        write_stdout(text.encode(self.encoding, errors="replace"))
        return len(text)

    def flush(self) -> None:
        """Nothing to do: every write has already reached the descriptor."""

    def isatty(self) -> bool:
        return sys.stdout is not None and sys.stdout.isatty()


@cache
def stdout() -> Console:
    """The console for results, writing through :class:`CheckedStdout`."""
    from rich.console import Console

    return Console(file=CheckedStdout(), highlight=False)  # type: ignore[arg-type]


@cache
def stderr() -> Console:
    """The console for progress, messages and explanations (sys.stderr, looked up per write)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def lines(console: Console, drawn: Box) -> Box | None:
    """A table's lines: ``drawn`` on a terminal, none when the output is piped or a file, so
    that plain text (no box-drawing characters) reaches scripts and spreadsheets."""
    return drawn if console.is_terminal else None


def error(message: str) -> None:
    """Print a one-line error message on stderr (nowhere if stderr is closed)."""
    line = " ".join(str(message).split())
    _to_stderr(f"convfilt: error: {line}")


_QUIET: list[bool] = [False]


def set_quiet(quiet: bool) -> None:
    """``--quiet``: from now on no chatter (messages, progress bars); results and errors stay."""
    _QUIET[0] = quiet


def message(text: str) -> None:
    """Print a plain line of chatter ("wrote out.png") on stderr, without loading Rich (none
    under ``--quiet``)."""
    if not _QUIET[0]:
        _to_stderr(text)


def warning(text: str) -> None:
    """A library's warning as one line on stderr: ``convfilt: warning: ...``, no source path."""
    line = " ".join(str(text).split())
    _to_stderr(f"convfilt: warning: {line}")


def _to_stderr(line: str) -> None:
    """One line on stderr. With stderr closed (``2>&-``) Python's ``print`` would fall back to
    stdout, which may carry an image or JSON, so the line is dropped instead."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError):  # a full disk under stderr must not hide the exit code
            print(line, file=sys.stderr, flush=True)


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout (plain, so it parses whatever the terminal)."""
    from .images import write_stdout

    write_stdout((json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def explain(plan: Plan) -> None:
    """Print the planner's estimates and its choice on stderr (``--explain``).

    One row per strategy that applies, cheapest first, with its estimate relative to the
    pick's and its error bound (max|result - exact| / max|image|); then the reason and the
    plan's notes (strategies that do not apply and why).
    """
    from rich import box
    from rich.table import Table

    image = "x".join(str(n) for n in plan.image_shape)
    kernel = "x".join(str(n) for n in plan.kernel_shape)
    table = Table(
        title=f"plan: {image} {plan.dtype}, kernel {kernel}, {plan.mode}",
        title_justify="left",
        box=lines(stderr(), box.SIMPLE_HEAD),
    )
    table.add_column("strategy")
    table.add_column("estimate", justify="right")
    table.add_column("vs chosen", justify="right")
    table.add_column("error bound", justify="right")
    chosen = plan.estimates.get(plan.strategy)
    for name, seconds in sorted(plan.estimates.items(), key=lambda kv: kv[1]):
        picked = name == plan.strategy
        ratio = f"{seconds / chosen:.2f}x" if chosen else ""
        bound = plan.error_bounds.get(name)
        table.add_row(
            f"[bold]{name} (chosen)[/]" if picked else name,
            f"{seconds * 1e3:.3g} ms",
            ratio,
            "" if bound is None else f"{bound:.1e}",
        )
    stderr().print(table)
    for line in (plan.reason, *plan.notes):
        stderr().print(f"  {line}", style="dim", markup=False)


def deconvolution(done: Report) -> None:
    """One ``--explain`` line per channel deconvolved: what ran, with which parameter, why."""
    grid = "x".join(map(str, done.shape))
    if done.method == "wiener":
        what = f"balance {done.balance:.4g} on |D|^{done.beta:.2f}"
    else:
        what = f"{done.iterations} iterations"
    noise = f"noise sigma {done.noise:.4g}"
    message(f"  {done.method}: {what}; {noise}; {done.stopped_by}; grid {grid}")


def _matrix(values: Any) -> str:
    """A small matrix as aligned rows of numbers (%.3g), for a table cell."""
    rows = [[f"{value:.3g}" for value in row] for row in values]
    width = max(len(cell) for row in rows for cell in row)
    return "\n".join(" ".join(cell.rjust(width) for cell in row) for row in rows)


def kernel_table(spec: str, facts: KernelFacts) -> None:
    """``convfilt kernel``: the kernel beside its flip, then the facts, on stdout.

    Plain ASCII lines when stdout is not a terminal, so the table survives a pipe or a file.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = stdout()
    style = box.SQUARE
    if not console.is_terminal:  # room for the whole table, in plain characters
        console = Console(file=console.file, width=max(console.width, 200), highlight=False)
        style = box.ASCII
    shape = "x".join(map(str, facts.shape))
    small = max(facts.shape) <= 11
    pair = Table(title=f"kernel {spec} ({shape})", title_justify="left", box=style)
    pair.add_column("kernel k (correlate slides this)")
    pair.add_column("flip k[::-1, ::-1] (convolve slides this)")
    if small:
        pair.add_row(_matrix(facts.kernel), _matrix(facts.flipped))
    else:
        pair.add_row(f"{shape}: too large to print", "see --plot")
    console.print(pair)
    agree = "yes" if facts.same_result else "no"
    if facts.symmetric and not facts.same_result:
        agree = "no: symmetric, but along an even axis the flip's centre moves by one pixel"
    elif not facts.symmetric:
        agree = "no: k != k[::-1, ::-1]"
    table = Table(box=style, show_header=False)
    table.add_column("fact")
    table.add_column("value")
    peak = float(facts.response.max())
    rows = [
        ("symmetric (k == flip)", "yes" if facts.symmetric else "no"),
        ("convolve == correlate", agree),
        ("separable (rank one)", "yes" if facts.separable else "no"),
        ("rank (SVD)", str(facts.rank)),
        ("sum", f"{facts.sum:.6g}"),
        ("DC gain |H(0)|", f"{facts.dc_gain:.6g}"),
        (f"|H| on {facts.response.shape[0]}² (max, min)",
         f"{peak:.4g}, {float(facts.response.min()):.4g}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


# --- bench and calibrate rendering (bench helper) --------------------------------------------


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, float], None]]:
    """A transient Rich progress bar on stderr; yields ``update(message, fraction)``.

    When stderr is not a terminal (a log file, a pipe), or under ``--quiet``, nothing is drawn.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if _QUIET[0] or not stderr().is_terminal:
        yield lambda message, fraction: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=stderr(),
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=1.0, message="")

        def update(message: str, fraction: float) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), message=message)

        yield update


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _bench_cell(record: CellRecord, name: str) -> str:
    """One timing cell: ms, bold green if the fastest, ``*`` if the planner's pick."""
    from rich.markup import escape

    from .bench import AUTO, NOT_APPLICABLE

    if name not in record.times_ms:
        reason = record.skipped.get(name)
        return "[dim]n/a[/]" if reason == NOT_APPLICABLE else "[dim]skipped[/]" if reason else ""
    text = _ms(record.times_ms[name])
    if name == record.fastest:
        text = f"[bold green]{text}[/]"
    if name == record.chosen or (name == AUTO and record.chosen not in record.times_ms):
        text += escape(" *")
    return text


def bench_tables(result: BenchResult) -> None:
    """Print one table per image size (kernel rows, strategy columns) and the summary.

    Piped output gets room for the whole table instead of the 80 columns Rich assumes.
    """
    from rich.console import Console

    from .bench import NOT_APPLICABLE

    console = stdout()
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 140), highlight=False)
    config = result.config
    columns = result.columns()
    shown = [c for c in columns if any(r.skipped.get(c) != NOT_APPLICABLE for r in result.records)]
    for size in config.sizes:
        console.print(_size_table(result, size, shown))
    hidden = [c for c in columns if c not in shown]
    references = sorted({r.reference for r in result.records})
    console.print(
        "[dim]bold green: fastest strategy · *: the planner's pick · skipped: estimated or "
        f"measured over {config.cap_s:g} s · error: max abs difference from "
        f"{' / '.join(references)} · predicted times, relative errors and the planner's "
        "error bounds: --json or --csv"
        + (f" · not applicable to these kernels: {', '.join(hidden)}" if hidden else "")
        + "[/]"
    )
    console.print(_summary_table(result))
    total = result.summary
    console.print(
        f"planner picked the fastest in {_share(total.planner_accuracy)} of cells, "
        f"within 1.15x in {_share(total.within_15pct)}; regret mean "
        f"{_times(total.mean_regret)}, worst {_times(total.max_regret)}"
    )


def _size_table(result: BenchResult, size: int, shown: list[str]) -> Table:
    """One image size's table: a row per kernel, a column per strategy shown, the errors."""
    from rich import box
    from rich.table import Table

    config = result.config
    with_error = [c for c in shown if any(c in r.error for r in result.records)]
    table = Table(
        title=f"image {size}x{size} {config.dtype}, mode {config.mode}: time in ms, max abs error",
        title_justify="left",
        box=lines(stdout(), box.SIMPLE_HEAD),
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("kernel", justify="right")
    for name in shown:
        table.add_column(_header(name), justify="right")
    table.add_column("regret", justify="right")
    for name in with_error:
        table.add_column(_header(name) + "\nerror", justify="right", style="dim")
    for r in (r for r in result.records if r.size == size):
        regret = f"{r.regret:.2f}x" if r.regret is not None else ""
        errors = [_error(r.error[c]) if c in r.error else "" for c in with_error]
        table.add_row(str(r.kernel), *(_bench_cell(r, c) for c in shown), regret, *errors)
    return table


def _summary_table(result: BenchResult) -> Table:
    """Per image size: the crossover kernel, how often the planner picked the fastest."""
    from rich import box
    from rich.table import Table

    from .bench import summarize

    config = result.config
    summary = Table(title="summary", title_justify="left", box=lines(stdout(), box.SIMPLE_HEAD))
    for heading in ("image", "crossover kernel", "planner picked fastest", "mean regret"):
        summary.add_column(heading, justify="right")
    for size in config.sizes:
        part = summarize(r for r in result.records if r.size == size)
        kernel = result.summary.crossover.get(size)
        summary.add_row(
            f"{size}x{size}",
            str(kernel) if kernel is not None else f"none up to {max(config.kernels)}",
            _share(part.planner_accuracy),
            _times(part.mean_regret),
        )
    return summary


def _header(name: str) -> str:
    """A column heading that breaks after hyphens, so "overlap-add" takes 8 columns."""
    return name.replace("-", "-\n")


def _error(value: float) -> str:
    """An error in six characters: ``3.3e-7`` (its order of magnitude is what matters)."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "n/a"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def write_bench_csv(result: BenchResult, path: Path, *, force: bool) -> None:
    """Write one CSV row per cell x strategy, atomically (images' temp-file-and-rename)."""
    import csv
    import io

    from .images import write_atomically

    rows = result.csv_rows()
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["size", "kernel"])
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()

    def write(file: BinaryIO) -> None:
        file.write(data)

    write_atomically(Path(path), write, force)


PLOT_EXTRA_MESSAGE = "--plot needs matplotlib: pip install 'convfilt[plot]'"


def require_matplotlib() -> None:
    """Fail early, with the extra to install, if matplotlib is missing (exit 1)."""
    from .errors import ConvfiltError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConvfiltError(PLOT_EXTRA_MESSAGE) from None


# colour, line and marker per column: the strategies stay apart in every panel
_PLOT_STYLES: dict[str, dict[str, Any]] = {
    "direct": {"color": "tab:blue", "linestyle": "-", "marker": "o"},
    "separable": {"color": "tab:purple", "linestyle": "-", "marker": "D"},
    "fft": {"color": "tab:orange", "linestyle": "--", "marker": "s"},
    "overlap-add": {"color": "tab:green", "linestyle": ":", "marker": "^"},
    "compiled": {"color": "tab:red", "linestyle": "-", "marker": "P"},
    "auto": {"color": "black", "linestyle": "-.", "marker": "x"},
    "scipy": {"color": "gray", "linestyle": "-.", "marker": "v"},
}


_PICK_STYLE: dict[str, Any] = {
    "marker": "o",
    "markersize": 11,
    "markerfacecolor": "none",
    "markeredgecolor": "black",
    "markeredgewidth": 1.2,
    "linestyle": "none",
}


def _minor_label(axes: Any, value: float, _position: int) -> str:
    """Label the 2s and 5s between powers of ten, when the axis spans under two decades."""
    low, high = axes.get_ylim()
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if high / low < 100 and mantissa in (2, 5) else ""


def _log_axes(axes: Any, kernels: list[int]) -> None:
    """Log-log axes with the kernel sizes as the x ticks and plain numbers on y."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(kernels)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(FuncFormatter(partial(_minor_label, axes)))
    axes.grid(True, which="major", alpha=0.3)


def _time_panels(figure: Any, result: BenchResult) -> list[Any]:
    """One panel per image size: measured medians (markers, solid) and the cost model's
    predictions (same colour, dotted), the planner's picks and the crossover."""
    config = result.config
    columns = [c for c in result.columns() if any(c in r.times_ms for r in result.records)]
    ncols = min(3, len(config.sizes))
    nrows = -(-len(config.sizes) // ncols)
    grid = figure.subplots(nrows, ncols, sharex=True, squeeze=False)
    for axes in grid.flat[len(config.sizes) :]:
        axes.set_visible(False)
    for axes, size in zip(grid.flat, config.sizes, strict=False):
        records = [r for r in result.records if r.size == size]
        for name in columns:
            style = _PLOT_STYLES.get(name, {"marker": "."})
            points = [(r.kernel, r.times_ms[name]) for r in records if name in r.times_ms]
            if points:
                axes.plot(*zip(*points, strict=True), label=name, linewidth=1.6, markersize=5,
                          **{**style, "linestyle": "-"})  # fmt: skip
            guess = [(r.kernel, r.predicted_ms[name]) for r in records if name in r.predicted_ms]
            if guess:
                axes.plot(*zip(*guess, strict=True), color=style.get("color"), linestyle=":",
                          linewidth=1.6, alpha=0.8)  # fmt: skip
        picks = [(r.kernel, r.times_ms[r.chosen]) for r in records if r.chosen in r.times_ms]
        if picks:
            axes.plot(*zip(*picks, strict=True), **_PICK_STYLE)
        crossing = result.summary.crossover.get(size)
        if crossing is not None:
            axes.axvline(crossing, color="crimson", linewidth=1.2, linestyle=(0, (4, 3)))
        note = f"crossover at {crossing}" if crossing is not None else "no crossover"
        axes.set_title(f"{size}x{size}: {note}", fontsize=11)
        _log_axes(axes, list(config.kernels))
    for axes in grid[:, 0]:
        axes.set_ylabel("time (ms)")
    for axes in grid[-1, :]:
        axes.set_xlabel("kernel size n (n x n)")
    return list(grid.flat)


def _error_panels(figure: Any, result: BenchResult) -> None:
    """One panel per road: its measured error relative to max|image| (markers, solid) and the
    planner's bound on it (``Plan.error_bounds``, dashed), by kernel size, one colour per
    image size: more operations, more rounding, and the bound above it."""
    from matplotlib import colormaps

    roads = [n for n in names.STRATEGIES if any(n in r.relative_error for r in result.records)]
    if not roads:
        return
    panels = figure.subplots(1, len(roads), sharey=True, squeeze=False)[0]
    shades = colormaps["viridis"]
    sizes = list(result.config.sizes)
    for axes, road in zip(panels, roads, strict=True):
        for index, size in enumerate(sizes):
            colour = shades(index / max(1, len(sizes) - 1))
            records = [r for r in result.records if r.size == size]
            measured = [(r.kernel, r.relative_error[road]) for r in records
                        if r.relative_error.get(road, 0.0) > 0.0]  # fmt: skip
            if measured:
                axes.plot(*zip(*measured, strict=True), marker=_PLOT_STYLES[road]["marker"],
                          color=colour, linewidth=1.2, markersize=4, label=f"{size}²")  # fmt: skip
            bound = [(r.kernel, r.error_bound[road]) for r in records if road in r.error_bound]
            if bound:
                axes.plot(*zip(*bound, strict=True), color=colour, linestyle="--",
                          linewidth=1.0)  # fmt: skip
        axes.set_title(f"{road}: error (markers), bound (dashed)", fontsize=10)
        _log_axes(axes, list(result.config.kernels))
        axes.set_xlabel("kernel size n")
    panels[0].set_ylabel("max |error| / max |image|")
    panels[-1].legend(fontsize=8, title="image", title_fontsize=8)


def write_bench_plot(result: BenchResult, path: Path, *, force: bool) -> None:
    """Save :func:`bench_figure` as a PNG, atomically."""
    from .images import write_atomically

    figure = bench_figure(result)
    write_atomically(Path(path), lambda file: figure.savefig(file, format="png"), force)


def bench_figure(result: BenchResult) -> Any:
    """The benchmark as a matplotlib Figure: time against kernel size (log-log), one panel
    per image size, measured beside predicted; below, a row with each road's measured error
    against its bound.

    The time panels show where the n²N² estimate of direct meets the N² log N² of the FFT, and
    the red vertical line where, measured, an FFT road stays ahead of direct.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    config = result.config
    ncols = min(3, len(config.sizes))
    nrows = -(-len(config.sizes) // ncols)
    width = max(4.4 * ncols, 3.2 * len(names.STRATEGIES))
    figure = Figure(figsize=(width, 3.4 * nrows + 4.4), dpi=100, layout="constrained")
    parts: Any = figure.subfigures(2, 1, height_ratios=[3.4 * nrows + 0.9, 3.5])
    times, errors = parts
    first = _time_panels(times, result)[0]
    _error_panels(errors, result)
    handles, labels = first.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="gray", linestyle=":"),
        Line2D([], [], **_PICK_STYLE),
        Line2D([], [], color="crimson", linestyle=(0, (4, 3))),
    ]
    labels += ["predicted (cost model)", "planner's pick", "crossover: FFT beats direct"]
    times.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    times.suptitle(
        f"convfilt bench: median time (markers) and the cost model's estimate (dotted) against "
        f"kernel size, {config.dtype}, mode {config.mode}, {result.machine.get('cpus')} cpus"
    )
    errors.suptitle(
        "each road's largest error against a float64 reference, relative to max|image|, "
        "beside the planner's bound (Plan.error_bounds)"
    )
    return figure


def calibration_table(constants: object, defaults: object, *, title: str) -> None:
    """Print the cost model's constants beside the shipped defaults (stdout).

    Numeric fields are rows; text fields (where the constants came from) follow as lines.
    """
    from dataclasses import asdict

    from rich import box
    from rich.table import Table

    values: dict[str, object] = asdict(constants)  # type: ignore[call-overload]
    default_values: dict[str, object] = asdict(defaults)  # type: ignore[call-overload]
    notes = [f"{name}: {value}" for name, value in values.items() if isinstance(value, str)]
    table = Table(title=title, title_justify="left", box=lines(stdout(), box.SIMPLE_HEAD))
    for heading in ("constant (seconds)", "value", "default", "value / default"):
        table.add_column(heading, justify="left" if heading.startswith("constant") else "right")
    for name, value in values.items():
        default = default_values.get(name)
        if not isinstance(value, int | float) or not isinstance(default, int | float):
            continue
        ratio = f"{value / default:.2f}" if default else ""
        table.add_row(name, f"{value:.4g}", f"{default:.4g}", ratio)
    stdout().print(table)
    for note in notes:
        stdout().print(note, markup=False)


def match_table(found: Sequence[Match], method: str) -> None:
    """The matches as a Rich table on stdout, best first."""
    from rich import box
    from rich.table import Table

    framed = lines(stdout(), box.HEAVY_HEAD)
    table = Table(title=f"matches ({method})", title_justify="left", box=framed)
    extra = TURNED_COLUMNS if found and hasattr(found[0], "angle") else ()
    for column in ("#", "x", "y", "width", "height", "score", "x_subpixel", "y_subpixel", *extra):
        table.add_column(column, justify="right")
    for rank, found_match in enumerate(found, start=1):
        table.add_row(
            str(rank),
            str(found_match.x),
            str(found_match.y),
            str(found_match.width),
            str(found_match.height),
            f"{found_match.score:.6g}",
            f"{found_match.x_subpixel:.3f}",
            f"{found_match.y_subpixel:.3f}",
            *(f"{getattr(found_match, name):.4g}" for name in extra),
        )
    stdout().print(table)


MATCH_COLUMNS = ("x", "y", "width", "height", "score", "x_subpixel", "y_subpixel")
TURNED_COLUMNS = ("scale", "angle", "center_x", "center_y")  # a scale x rotation search's


def match_csv(found: Sequence[Match]) -> None:
    """The matches as CSV on stdout (``match --csv``): a header, then one row per match,
    best first, with full precision."""
    import csv
    import io

    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    columns = MATCH_COLUMNS + (TURNED_COLUMNS if found and hasattr(found[0], "angle") else ())
    writer.writerow(("rank", *columns))
    for rank, found_match in enumerate(found, start=1):
        writer.writerow((rank, *(getattr(found_match, name) for name in columns)))
    sys.stdout.flush()
    from .images import write_stdout

    write_stdout(text.getvalue().encode())
