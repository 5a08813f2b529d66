"""The ``convfilt`` command line: thin Typer commands over the library.

Each command parses its options, calls the library and renders the result; no numerics live
here. numpy, scipy and Pillow are imported inside the commands so that ``convfilt --help``
starts fast.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from . import names, report
from .errors import ConvfiltError

if TYPE_CHECKING:  # the match command's helpers (numpy is imported only inside commands)
    import numpy as np
    from numpy.typing import NDArray

    from .images import Picture
    from .matching import Match
    from .search import TurnedMatch


class OneLineErrors(TyperGroup):
    """Report Click's own usage errors (bad option value, unknown option) as one line.

    By default Click prints a usage block or a boxed panel; the CLI contract is one line on
    stderr naming the option, and exit 2, like every other usage error.
    """

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run = partial(super().main, args, prog_name, complete_var, standalone_mode=False, **extra)
        self._plain_help_when_piped()
        if not standalone_mode:
            return run()
        try:
            code = run()
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # bare `convfilt`: the help text, not an error line
            raise SystemExit(exc.exit_code) from None
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "convfilt"
            hint = f" (see '{command} --help')" if isinstance(exc, click.UsageError) else ""
            # Click and Typer each suggest a close command name: say it once
            text = re.sub(r"\s*\(Did you mean one of: [^)]*\)", "", exc.format_message())
            report.error(f"{text}{hint}")
            raise SystemExit(exc.exit_code) from None
        except click.Abort:
            report.error("aborted")
            raise SystemExit(1) from None
        except BrokenPipeError:
            raise
        except OSError as exc:  # --help or --version onto a full disk (commands have cli_errors)
            report.error(f"{exc.filename or '<stdout>'}: cannot write ({exc.strerror or exc})")
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)

    def _plain_help_when_piped(self) -> None:
        """Help in Rich's panels on a terminal; Click's plain text when stdout is not one (no
        box drawing, and choice lists are never cut mid-word by a panel's width)."""
        try:
            if sys.stdout.isatty():
                return
        except (AttributeError, ValueError):  # no stdout, or a closed one: not a terminal
            pass
        self.rich_markup_mode = None
        for command in self.commands.values():
            command.rich_markup_mode = None  # type: ignore[attr-defined]


app = typer.Typer(
    name="convfilt",
    cls=OneLineErrors,
    help="Image filtering by the cheapest exact road: direct, separable or FFT convolution.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"convfilt {__version__}")
        raise typer.Exit()


def _quiet(value: bool) -> None:
    if value:
        report.set_quiet(True)


QUIET_HELP = "Print only results and errors: no progress, no notes."
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP, callback=_quiet)]


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
) -> None:
    """Image filtering by the cheapest exact road: direct, separable or FFT convolution."""
    report.set_quiet(quiet)  # each run starts from its own setting


# Library parameter -> the command's own parameter, where the two names differ. Every other
# library parameter is the command's parameter of the same name; ``parameter_flags`` reads
# each command's flags from its options, so this and the options are the one table.
_LIBRARY_PARAMETERS = {"luminance": "gray"}


def parameter_flags(command: click.Command | None) -> dict[str, str]:
    """The table from Python parameter names to ``command``'s flags (sigma_y -> --sigma-y)."""
    flags: dict[str, str] = {}
    for param in command.params if command is not None else []:
        if isinstance(param, click.Option) and param.name is not None:
            flags[param.name] = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    for library, own in _LIBRARY_PARAMETERS.items():
        if own in flags:
            flags[library] = flags[own]
    return flags


def flag_message(exc: ConvfiltError, flags: dict[str, str]) -> str:
    """``exc``'s message with the parameters it names shown as flags.

    The first mention of each parameter, as a word (``top must be ...``, ``out_dir x: ...``)
    or as ``name=True`` (``use force=True to overwrite``), becomes the flag; one that the
    command has no flag for stays as it is.
    """
    text = str(exc)
    for name in exc.parameters:
        if name in flags:
            word = re.compile(rf"(?:(?<=^)|(?<=[\s(])){re.escape(name)}(?:=True)?(?=[\s:,;)]|$)")
            text = word.sub(flags[name], text, count=1)
    return text


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library failures into a one-line message and the contract's exit code."""
    try:
        yield
    except ConvfiltError as exc:
        context = click.get_current_context(silent=True)
        report.error(flag_message(exc, parameter_flags(context.command if context else None)))
        raise typer.Exit(exc.exit_code) from None
    except MemoryError:
        report.error("out of memory; try a smaller image or --strategy fft/overlap-add")
        raise typer.Exit(1) from None
    except BrokenPipeError:
        raise  # the reader of our stdout went away: Click exits quietly
    except OSError as exc:  # I/O the library did not name (e.g. Rich's table onto a full disk)
        where = exc.filename or "I/O error"
        report.error(f"{where}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        report.error("interrupted")
        raise typer.Exit(130) from None
    except Terminated as exc:
        report.error(f"terminated by {exc.name}")
        raise typer.Exit(128 + exc.signum) from None


def _choice(choices: tuple[str, ...]) -> click.Choice:
    """A Click choice over names from ``names`` (so --help needs no numpy)."""
    return click.Choice(choices, case_sensitive=False)


NanPolicyOption = Annotated[
    str,
    typer.Option(
        "--nan-policy",
        help="NaN/inf in float images: propagate (over each one's footprint, as scipy.ndimage), "
        "omit (left out, the kernel renormalized over valid pixels), raise (an error).",
        click_type=_choice(names.NAN_POLICIES),
    ),
]

ModeOption = Annotated[
    str,
    typer.Option(
        "--mode", help="Boundary mode (scipy.ndimage names).", click_type=_choice(names.MODES)
    ),
]
StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="Convolution strategy; auto picks the cheapest.",
        click_type=_choice(names.STRATEGY_CHOICES),
    ),
]
OldMethodOption = Annotated[
    str | None,
    typer.Option(
        "--method",
        hidden=True,
        help="Deprecated spelling of --strategy.",
        click_type=_choice(names.STRATEGY_CHOICES),
    ),
]


def _strategy(strategy: str, old_method: str | None) -> str:
    """``--strategy``, or its deprecated spelling ``--method`` (with a one-line note)."""
    from .errors import UsageError

    if old_method is None:
        return strategy
    report.message("convfilt: note: --method is deprecated here; use --strategy")
    if strategy not in (names.AUTO, old_method):
        raise UsageError("--strategy and --method disagree; give --strategy only")
    return old_method


ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print the planner's estimates and choice on stderr.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output file ('-' for stdout).")
]


# --- blur, sharpen, convolve (filters helper) ---------------------------------------------------


InputsArgument = Annotated[
    list[str],
    typer.Argument(metavar="INPUT...", help="Input images ('-' reads stdin).", show_default=False),
]
OutDirOption = Annotated[
    Path | None,
    typer.Option("--out-dir", help="Write <stem>-<command><suffix> files into this folder."),
]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", help="Output format (png, jpeg, tiff, webp, ...); default: from -o."),
]
QualityOption = Annotated[
    int | None, typer.Option("--quality", help="JPEG/WebP quality, 1 to 100.")
]
MaxPixelsOption = Annotated[
    int | None,
    typer.Option("--max-pixels", help="Refuse larger images (decompression-bomb guard)."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help='Print {"outputs": [{"input", "output"}]} on stdout.')
]
LinearOption = Annotated[
    bool, typer.Option("--linear", help="Filter in linear light (sRGB decoded), not on the codes.")
]
TruncateOption = Annotated[
    float, typer.Option("--truncate", help="Gaussian reach in sigmas: radius round(t*sigma).")
]


MemoryOption = Annotated[
    str | None,
    typer.Option(
        "--memory",
        help="Memory budget (256M, 2G). Images whose working set exceeds it stream by bands "
        "(TIFF, Zarr in and out). [default: a quarter of the available memory, at most 2G]",
        show_default=False,
    ),
]


DeblurMemoryOption = Annotated[
    str | None,
    typer.Option(
        "--memory",
        help="Memory budget (256M, 2G): an image whose deconvolution needs more is refused "
        "before it is read (deconvolution works on the whole image; it does not stream). "
        "[default: the available memory]",
        show_default=False,
    ),
]


SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Run on a Dask distributed scheduler (tcp://HOST:8786, started with "
        "'dask scheduler' and 'dask worker'); the same bytes as the in-process run.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class _Streaming:
    """What a filter command needs to run an image by bands: the filter for an image (with
    alpha or not, reporting plans to a callback), its kernel (for the plan and the halo)."""

    make_filter: Callable[[bool, Any], Any]
    kernel: Any
    mode: str
    strategy: str
    memory: str | None
    explain: bool
    scheduler: str | None = None


@dataclass(frozen=True)
class _Destination:
    """Where and how the shared pipeline writes its results."""

    out: Path | None
    out_dir: Path | None
    force: bool
    format: str | None
    quality: int | None
    max_pixels: int | None
    as_json: bool


def expand_patterns(inputs: list[str]) -> list[str]:
    """INPUTs as a POSIX shell gives them: a quoted pattern (``'*.png'``) is expanded here, in
    sorted order, so that it works the same where no shell expands it (Windows). A name that
    exists as a file is taken as it is, even with ``*?[`` in it; a pattern that matches
    nothing is a usage error."""
    import glob

    from .errors import UsageError

    expanded: list[str] = []
    for item in inputs:
        if any(c in item for c in "*?[") and not Path(item).exists():
            found = sorted(glob.glob(item))
            if not found:
                raise UsageError(f"{item}: no file matches this pattern")
            expanded += found
        else:
            expanded.append(item)
    return expanded


def _targets(command: str, inputs: list[str], dest: _Destination) -> list[str | Path]:
    """Every input's output, resolved and checked (each conflict refused) before any work."""
    from . import images
    from .errors import UsageError

    if dest.out is not None and len(inputs) > 1:
        raise UsageError("-o names one output; with several inputs use --out-dir")
    if dest.out is not None and dest.out_dir is not None:
        raise UsageError("-o and --out-dir do not go together; give one")
    if inputs.count(images.STDIO) > 1:
        raise UsageError("'-' (stdin) can be read only once")
    targets = [
        images.resolve_output(
            source,
            command,
            out=dest.out,
            out_dir=dest.out_dir,
            force=dest.force,
            format=dest.format,
        )
        for source in inputs
    ]
    if dest.as_json and images.STDIO in map(str, targets):
        raise UsageError("--json and an image on stdout cannot share it; write to a file")
    files = [str(target) for target in targets if str(target) != images.STDIO]
    if len(set(files)) < len(files):
        raise UsageError("two inputs would write the same output; use -o or rename one")
    for target in targets:  # unknown extension or --format: refuse before any work
        if Path(target).suffix.lower() != ".zarr":
            images.output_format(str(target), dest.format)
        elif dest.format is not None:  # a Zarr folder is written by streams, in no format
            raise UsageError(f"{target}: --format {dest.format} contradicts a .zarr output")
    replacing_the_input = len(inputs) == 1 and dest.out is not None and dest.force  # -o IN -f
    for target in [] if replacing_the_input else files:  # no output may replace an input
        for source in inputs:
            if source != images.STDIO and images.same_file(Path(source), Path(target)):
                raise UsageError(f"{target}: would overwrite the input {source}; rename one")
    return targets


def _run_pipeline(
    command: str,
    inputs: list[str],
    transform: Callable[[Picture], NDArray[Any]],
    dest: _Destination,
    streaming: _Streaming | None = None,
) -> None:
    """Load, filter and save each input: the one pipeline behind blur, sharpen and convolve.

    Every output is resolved (and every conflict reported) before the first image is read;
    a failure stops the batch, leaving earlier outputs complete and no partial file. With
    ``streaming``, an image too large for the memory budget runs by bands (streams.route).
    """
    from . import images

    inputs = expand_patterns(inputs)
    targets = _targets(command, inputs, dest)
    written: list[dict[str, str]] = []
    bar = report.progress_bar(command) if len(inputs) > 1 else nullcontext(None)
    cluster = _cluster(streaming)
    with bar as update, cluster as client:
        for done, (source, target) in enumerate(zip(inputs, targets, strict=True)):
            if streaming is not None and _streamed(source, str(target), streaming, dest, client):
                written.append({"input": source, "output": str(target)})
                if not dest.as_json:
                    report.message(f"wrote {target}")
                continue
            picture = images.load(source, max_pixels=dest.max_pixels)
            images.check_can_hold(picture.pixels, str(target), dest.format)  # before the work
            if client is not None and streaming is not None:
                transform = partial(_on_cluster, client, streaming)
            result = picture.with_pixels(transform(picture))
            del picture
            if dest.out_dir is not None:  # made only once there is something to put in it
                images.make_folder(dest.out_dir)
            images.save(result, target, format=dest.format, quality=dest.quality, force=dest.force)
            shown = "<stdout>" if str(target) == images.STDIO else str(target)
            written.append({"input": source, "output": shown})
            if not dest.as_json and str(target) != images.STDIO:  # stdout holds the image
                report.message(f"wrote {shown}")
            if update is not None:
                update(source, (done + 1) / len(inputs))
    if dest.as_json:
        report.print_json({"outputs": written})


@contextmanager
def _cluster(streaming: _Streaming | None) -> Iterator[Any]:
    """The client of ``--scheduler`` (None without one), closed at the end."""
    if streaming is None or streaming.scheduler is None:
        yield None
        return
    from . import tiles

    _quiet_distributed()
    client = tiles.connect(streaming.scheduler)
    try:
        yield client
    finally:
        client.close()


def _quiet_distributed() -> None:
    """distributed logs to stderr from handlers of its own (a worker lost, keys rescheduled);
    the command says what matters in one line, so those logs are dropped. The pixels travel
    inside the tasks on purpose (a band lost with its worker can then be run again), so
    distributed's warning about large graphs is not for us either."""
    try:
        import dask
        import distributed  # noqa: F401  (its import installs the handlers)
    except ImportError:
        return  # tiles.connect says what to install
    dask.config.set({"distributed.admin.large-graph-warning-threshold": "1PiB"})
    # its configuration may give child loggers (distributed.client, ...) handlers of their own
    known = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]
    for name in {"distributed", *known}:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
        log.propagate = name != "distributed"  # children pass on to the silenced parent
    logging.getLogger("distributed").addHandler(logging.NullHandler())


def _on_cluster(client: Any, streaming: _Streaming, picture: Picture) -> NDArray[Any]:
    """The filter on ``client``'s workers, band by band (the in-process run's bytes)."""
    from . import tiles

    if streaming.explain:
        report.message(
            f"{picture.source}: on Dask at {streaming.scheduler} with "
            f"{tiles.workers(client)} workers"
        )
    return tiles.on_cluster(client, streaming.make_filter(picture.has_alpha, None), picture.pixels)


def _streamed(
    source: str, target: str, streaming: _Streaming, dest: _Destination, client: Any = None
) -> bool:
    """Run ``source`` by bands if it does not fit the memory budget; False: run it in memory."""
    from . import streams, tiles

    budget = tiles.parse_size(streaming.memory) if streaming.memory else tiles.default_budget()
    route = streams.route(
        source,
        target,
        streaming.kernel,
        mode=streaming.mode,
        strategy=streaming.strategy,
        budget=budget,
    )
    if route.layout is None:
        if streaming.explain and client is None:
            report.message(f"{source}: {route.describe()}")
        return False
    reader, layout = route.reader, route.layout
    assert reader is not None
    func = streaming.make_filter(reader.has_alpha, None)  # the road: route.plan's
    lanes, where = tiles.lanes_for(layout.strategy), ""
    if client is not None:
        func = tiles.remote(client, func)
        count = tiles.workers(client)
        lanes = tiles.in_flight(layout, reader.shape, reader.dtype, budget, count)
        where = f", on Dask at {streaming.scheduler}: {lanes} bands in flight on {count} workers"
    if streaming.explain:
        report.explain(route.plan)
        report.message(f"{source}: {route.describe()}{where}")
    if dest.out_dir is not None:
        from . import images

        images.make_folder(dest.out_dir)
    count = layout.count
    with report.progress_bar(Path(source).name) as update:
        streams.filter_file(
            route,
            target,
            func,
            mode=streaming.mode,
            force=dest.force,
            progress=lambda done: update(f"{done}/{count} bands", done / count),
            lanes=lanes,
        )
    return True


@app.command()
def blur(
    inputs: InputsArgument,
    out: OutOption = None,
    out_dir: OutDirOption = None,
    sigma: Annotated[
        float | None, typer.Option("--sigma", help="Gaussian sigma in pixels (x). [default: 2]")
    ] = None,
    sigma_y: Annotated[
        float | None, typer.Option("--sigma-y", help="Gaussian sigma along y; default --sigma.")
    ] = None,
    truncate: TruncateOption = 4.0,
    kind: Annotated[
        str, typer.Option("--kind", help="Blur kernel.", click_type=_choice(names.BLUR_KINDS))
    ] = names.GAUSSIAN,
    radius: Annotated[
        int | None,
        typer.Option("--radius", help="Box radius: a (2R+1)x(2R+1) mean. [default: 2]"),
    ] = None,
    mode: ModeOption = names.REFLECT,
    strategy: StrategyOption = names.AUTO,
    method: OldMethodOption = None,
    nan_policy: NanPolicyOption = names.PROPAGATE,
    explain: ExplainOption = False,
    memory: MemoryOption = None,
    scheduler: SchedulerOption = None,
    linear: LinearOption = False,
    force: ForceOption = False,
    format: FormatOption = None,
    quality: QualityOption = None,
    max_pixels: MaxPixelsOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Blur images: Gaussian (default) or box, alpha-aware, optionally in linear light."""
    with cli_errors():
        from . import filters, kernels

        road = _strategy(strategy, method)
        from .errors import UsageError

        on_plan = report.explain if explain else None
        transform: Callable[[Picture], NDArray[Any]]
        if kind == names.GAUSSIAN:
            if radius is not None:
                raise UsageError("--radius is for --kind box; a Gaussian takes --sigma")
            sigma_x = filters.check_positive(2.0 if sigma is None else sigma, "sigma")
            if sigma_y is not None:
                filters.check_positive(sigma_y, "sigma_y")
            filters.check_positive(truncate, "truncate")
            y_name = "sigma" if sigma_y is None else "sigma_y"
            along_y = kernels.gaussian_1d(
                sigma_x if sigma_y is None else sigma_y, truncate, name=y_name
            )
            kernel = kernels.outer(along_y, kernels.gaussian_1d(sigma_x, truncate))

            def make(has_alpha: bool, report_plan: Any) -> Any:
                return partial(
                    filters.gaussian_blur,
                    sigma=sigma_x,
                    sigma_y=sigma_y,
                    truncate=truncate,
                    mode=mode,
                    strategy=road,
                    nan_policy=nan_policy,
                    linear=linear,
                    has_alpha=has_alpha,
                    on_plan=report_plan,
                )

        else:
            if sigma is not None or sigma_y is not None:
                raise UsageError("--sigma/--sigma-y are for --kind gaussian; a box takes --radius")
            box_radius = filters.check_radius(2 if radius is None else radius, "radius")
            box = kernels.box_1d(box_radius)
            kernel = kernels.outer(box, box)

            def make(has_alpha: bool, report_plan: Any) -> Any:
                return partial(
                    filters.box_blur,
                    radius=box_radius,
                    mode=mode,
                    strategy=road,
                    nan_policy=nan_policy,
                    linear=linear,
                    has_alpha=has_alpha,
                    on_plan=report_plan,
                )

        def transform(picture: Picture) -> NDArray[Any]:
            return make(picture.has_alpha, on_plan)(picture.pixels)

        dest = _Destination(out, out_dir, force, format, quality, max_pixels, as_json)
        streaming = _Streaming(make, kernel, mode, road, memory, explain, scheduler)
        _run_pipeline("blur", inputs, transform, dest, streaming)


@app.command()
def sharpen(
    inputs: InputsArgument,
    out: OutOption = None,
    out_dir: OutDirOption = None,
    sigma: Annotated[float, typer.Option("--sigma", help="Sigma of the blur subtracted.")] = 1.0,
    amount: Annotated[
        float, typer.Option("--amount", help="How much detail to add back (0 = none).")
    ] = 1.0,
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Leave detail below this fraction of full scale, [0, 1)."),
    ] = 0.0,
    truncate: TruncateOption = 4.0,
    mode: ModeOption = names.REFLECT,
    strategy: StrategyOption = names.AUTO,
    method: OldMethodOption = None,
    nan_policy: NanPolicyOption = names.PROPAGATE,
    explain: ExplainOption = False,
    memory: MemoryOption = None,
    scheduler: SchedulerOption = None,
    linear: LinearOption = False,
    force: ForceOption = False,
    format: FormatOption = None,
    quality: QualityOption = None,
    max_pixels: MaxPixelsOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Sharpen images by unsharp masking: img + amount * (img - blur(img))."""
    with cli_errors():
        from . import filters, kernels

        road = _strategy(strategy, method)

        filters.check_positive(sigma, "sigma")
        filters.check_finite(amount, "amount")
        filters.check_threshold(threshold, "threshold")
        filters.check_positive(truncate, "truncate")
        on_plan = report.explain if explain else None
        along = kernels.gaussian_1d(sigma, truncate)

        def make(has_alpha: bool, report_plan: Any) -> Any:
            return partial(
                filters.unsharp_mask,
                sigma=sigma,
                amount=amount,
                threshold=threshold,
                truncate=truncate,
                mode=mode,
                strategy=road,
                nan_policy=nan_policy,
                linear=linear,
                has_alpha=has_alpha,
                on_plan=report_plan,
            )

        def transform(picture: Picture) -> NDArray[Any]:
            return make(picture.has_alpha, on_plan)(picture.pixels)

        dest = _Destination(out, out_dir, force, format, quality, max_pixels, as_json)
        kernel = kernels.outer(along, along)
        streaming = _Streaming(make, kernel, mode, road, memory, explain, scheduler)
        _run_pipeline("sharpen", inputs, transform, dest, streaming)


# Kept in step with kernels.PRESETS by a test; spelled out so --help needs no numpy.
_PRESET_HELP = (
    "box:N, gaussian:S, sharpen, laplacian, sobel-x, sobel-y, emboss, motion:N, "
    "motion:LENGTH:ANGLE, disk:R (N a size, S a sigma, R a radius, ANGLE in degrees)"
)


_CONVOLVE_HELP = (
    "Convolve images with a kernel: flipped in both axes (true convolution) by default. "
    "With --correlate the kernel slides as written. The two agree on symmetric kernels "
    "(box, gaussian) and differ on asymmetric ones (sobel, emboss): sobel-x convolved gives "
    "+d/dx, correlated -d/dx. Averaging kernels treat alpha like blur; others keep alpha. "
    "Integer images clip negative responses to 0."
)


@app.command(help=_CONVOLVE_HELP)
def convolve(
    inputs: InputsArgument,
    kernel: Annotated[
        str,
        typer.Option(
            "--kernel",
            "-k",
            help=f"A preset ({_PRESET_HELP}) or a file: text rows of numbers "
            "(spaces or commas, # comments) or .npy.",
            show_default=False,
        ),
    ],
    correlate: Annotated[
        bool,
        typer.Option(
            "--correlate", help="Slide the kernel as it is (correlation) instead of flipped."
        ),
    ] = False,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Divide the kernel by its sum first.")
    ] = False,
    out: OutOption = None,
    out_dir: OutDirOption = None,
    mode: ModeOption = names.REFLECT,
    strategy: StrategyOption = names.AUTO,
    method: OldMethodOption = None,
    nan_policy: NanPolicyOption = names.PROPAGATE,
    explain: ExplainOption = False,
    memory: MemoryOption = None,
    scheduler: SchedulerOption = None,
    linear: LinearOption = False,
    force: ForceOption = False,
    format: FormatOption = None,
    quality: QualityOption = None,
    max_pixels: MaxPixelsOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Convolve (or correlate) images with a preset or file kernel; see _CONVOLVE_HELP."""
    with cli_errors():
        road = _strategy(strategy, method)
        from . import filters, kernels

        weights = kernels.load_kernel(kernel, normalize=normalize)
        on_plan = report.explain if explain else None
        if explain:
            operation = "correlating (kernel as is)" if correlate else "convolving (kernel flipped)"
            shape = "x".join(map(str, weights.shape))
            report.message(f"{operation} with {kernel} ({shape})")

        def make(has_alpha: bool, report_plan: Any) -> Any:
            return partial(
                filters.convolve_image,
                kernel=weights,
                correlate=correlate,
                mode=mode,
                strategy=road,
                nan_policy=nan_policy,
                linear=linear,
                has_alpha=has_alpha,
                on_plan=report_plan,
            )

        def transform(picture: Picture) -> NDArray[Any]:
            return make(picture.has_alpha, on_plan)(picture.pixels)

        dest = _Destination(out, out_dir, force, format, quality, max_pixels, as_json)
        streaming = _Streaming(make, weights, mode, road, memory, explain, scheduler)
        _run_pipeline("convolve", inputs, transform, dest, streaming)


# --- deblur and kernel (deconvolution helper) ---------------------------------------------------


def _deblur_fits(
    inputs: list[str], psf_shape: tuple[int, ...], method: str, memory: str | None
) -> None:
    """Refuse, before any is read, an input whose deconvolution exceeds ``--memory`` (by
    default the memory available now; nothing is checked where that is unknown)."""
    from . import deconvolution, streams, tiles

    budget = tiles.parse_size(memory) if memory else tiles.available_memory()
    if budget is None:
        return
    for source in expand_patterns(inputs):
        shape, dtype = streams._header(source)
        deconvolution.check_memory(source, shape, dtype, psf_shape, method, budget)


@app.command()
def deblur(
    inputs: InputsArgument,
    psf: Annotated[
        str,
        typer.Option(
            "--psf",
            help="The blur: gaussian:SIGMA, box:R, disk:R, motion:LENGTH:ANGLE, a kernel file "
            "(text or .npy) or an image of a point source (normalised to sum 1).",
            show_default=False,
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="wiener: one regularised division in frequency; richardson-lucy: the "
            "iteration for non-negative images (astronomy, microscopy).",
            click_type=_choice(names.DECONVOLUTION_METHODS),
        ),
    ] = names.WIENER,
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations",
            help="Richardson-Lucy iterations. [default: stop when the fit reaches the noise]",
        ),
    ] = None,
    balance: Annotated[
        float | None,
        typer.Option(
            "--balance",
            help="Wiener's weight on the Laplacian (scikit-image's balance). "
            "[default: from the estimated noise]",
        ),
    ] = None,
    out: OutOption = None,
    out_dir: OutDirOption = None,
    mode: ModeOption = names.REFLECT,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Say on stderr what ran: noise, balance or iterations."),
    ] = False,
    linear: LinearOption = False,
    force: ForceOption = False,
    format: FormatOption = None,
    quality: QualityOption = None,
    max_pixels: MaxPixelsOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    memory: DeblurMemoryOption = None,
) -> None:
    """Undo a known blur (deconvolution): Wiener or Richardson-Lucy, bit depth and alpha kept."""
    with cli_errors():
        from . import deconvolution, kernels

        deconvolution.check_method(method, iterations, balance)
        weights = deconvolution.check_psf(kernels.load_psf(psf))
        _deblur_fits(inputs, weights.shape, method, memory)
        on_report = report.deconvolution if explain else None
        if explain:
            shape = "x".join(map(str, weights.shape))
            report.message(f"deblur: {method} with psf {psf} ({shape}, normalised to sum 1)")

        def transform(picture: Picture) -> NDArray[Any]:
            return deconvolution.deconvolve(
                picture.pixels,
                weights,
                method=method,
                iterations=iterations,
                balance=balance,
                mode=mode,
                linear=linear,
                has_alpha=picture.has_alpha,
                on_report=on_report,
            )

        dest = _Destination(out, out_dir, force, format, quality, max_pixels, as_json)
        _run_pipeline("deblur", inputs, transform, dest)


@app.command()
def kernel(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="SPEC", help=f"A preset ({_PRESET_HELP}) or a kernel file (text or .npy)."
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw the kernel, its flip and |H| to a PNG."),
    ] = None,
    force: ForceOption = False,
    size: Annotated[
        int, typer.Option("--size", help="Pad the kernel to NxN for its frequency response |H|.")
    ] = 64,
) -> None:
    """Show what a kernel does: its flip, convolve vs correlate, rank, sum and |H|."""
    with cli_errors():
        from . import images, kernels
        from .errors import UsageError

        if plot is not None:
            images.check_writable(plot, force=force, option="plot")
            if plot.suffix.lower() != ".png":
                raise UsageError(f"--plot {plot}: the plot is a PNG; name a .png file")
            report.require_matplotlib()
        if size < 1:
            raise UsageError(f"--size must be an integer >= 1, got {size}")
        facts = kernels.describe(kernels.load_kernel(spec), size=size)
        if as_json:
            report.print_json({"spec": spec, **facts.to_json()})
        else:
            report.kernel_table(spec, facts)
        if plot is not None:
            from . import render

            render.kernel_figure(spec, facts, plot, force=force)
            report.message(f"wrote {plot}")


# --- bench and calibrate (bench helper) --------------------------------------------------------


_STRATEGY_NAMES = ",".join(names.STRATEGIES)


@app.command()
def bench(
    sizes: Annotated[
        str,
        typer.Option(help="Image sizes: 64..2048 (the powers of two), a list 64,100,300, or 256."),
    ] = "64..2048",
    kernels: Annotated[
        str,
        typer.Option(help="Kernel sizes: 3..65 (2^k+1: 3,5,9,17,33,65), a list 3,7,15, or 9."),
    ] = "3..65",
    dtype: Annotated[
        str,
        typer.Option(help="Float type of the images.", click_type=_choice(names.FLOAT_DTYPES)),
    ] = names.FLOAT_DTYPES[0],
    repeat: Annotated[
        int, typer.Option(help="Timed runs per cell (median; fewer for slow cells).")
    ] = 3,
    methods: Annotated[
        str,
        typer.Option("--strategies", "--methods", help="Comma-separated strategies to time."),
    ] = _STRATEGY_NAMES,
    compare: Annotated[
        str, typer.Option(help="Also time a peer: scipy (scipy.signal.correlate, method auto).")
    ] = "",
    mode: ModeOption = names.REFLECT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")
    ] = False,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write one CSV row per cell and strategy.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw time against kernel size to a PNG (matplotlib)."),
    ] = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> None:
    """Time direct, separable and FFT convolution here; show where they cross over.

    For each image size and kernel size (seeded random kernels of rank > 1):
    each strategy's median time, the planner's pick and its regret (pick/fastest),
    the predicted times (in --json and --csv) and each strategy's largest error
    against a float64 reference. A strategy estimated, or measured at a smaller
    kernel, to take over 2 s is skipped, not run.
    """
    with cli_errors():
        from . import bench as runner
        from . import images
        from .errors import UsageError

        config = runner.BenchConfig(
            sizes=runner.parse_range(sizes, "sizes"),
            kernels=runner.parse_range(kernels, "kernels"),
            dtype=dtype,
            repeat=repeat,
            methods=_split_names(methods),
            compare=_split_names(compare),
            mode=mode,
        )
        for path, option in ((csv, "csv"), (plot, "plot")):
            if path is not None:
                images.check_writable(path, force=force, option=option)
        if plot is not None:
            if plot.suffix.lower() != ".png":
                raise UsageError(f"--plot {plot}: the plot is a PNG; name a .png file")
            report.require_matplotlib()
        with report.progress_bar("bench") as update:
            result = runner.run(config, progress=update)
        if as_json:
            report.print_json(result.to_json())
        else:
            report.bench_tables(result)
        if csv is not None:
            report.write_bench_csv(result, csv, force=force)
            report.message(f"wrote {csv}")
        if plot is not None:
            report.write_bench_plot(result, plot, force=force)
            report.message(f"wrote {plot}")


def _split_names(text: str) -> tuple[str, ...]:
    """``"direct, fft"`` -> ``("direct", "fft")``: a comma list, blanks dropped, order kept."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


@app.command()
def calibrate(
    show: Annotated[
        bool, typer.Option("--show", help="Print the stored (or default) constants; no timing.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the stored constants (back to the defaults).")
    ] = False,
    budget: Annotated[
        float | None, typer.Option(min=0.5, help="Seconds to spend measuring (approximate).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the constants as one JSON object instead of a table."),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Measure the cost model's constants on this machine and store them for the planner."""
    with cli_errors():
        from . import calibration
        from .errors import UsageError

        if show and reset:
            raise UsageError("--show and --reset do not go together")
        path = calibration.constants_path()
        if reset:
            removed = calibration.reset_constants()
            report.message(f"removed {path}" if removed else f"nothing stored at {path}")
            return
        defaults = calibration.default_constants()
        if show:
            stored = calibration.stored_constants()
            if stored is not None:
                where = f"stored in {path}"
            elif path.exists():
                where = f"shipped defaults: {path} is not usable, run convfilt calibrate"
            else:
                where = "shipped defaults, none stored"
            _constants_out(stored or defaults, defaults, f"cost constants ({where})", as_json)
            return
        options = {} if budget is None else {"budget_s": budget}
        from .bench import calibrate as measure

        with report.progress_bar("calibrate") as update:
            constants = measure(progress=update, **options)
        saved = calibration.save_constants(constants)
        _constants_out(constants, defaults, f"measured cost constants ({saved})", as_json)


def _constants_out(constants: Any, defaults: Any, title: str, as_json: bool) -> None:
    """The constants beside the defaults: a table, or (``--json``) one JSON object."""
    if as_json:
        document = {"title": title, "constants": constants.to_json()}
        report.print_json({**document, "defaults": defaults.to_json()})
    else:
        report.calibration_table(constants, defaults, title=title)


# --- match (matching helper) -------------------------------------------------------------------


@app.command()
def match(
    scene: Annotated[str, typer.Argument(help="The image to search ('-' for stdin).")],
    probe: Annotated[str, typer.Argument(help="The image to find ('-' for stdin).")],
    top: Annotated[int, typer.Option(help="Report at most this many matches.")] = 1,
    min_score: Annotated[
        float | None,
        typer.Option(help="Score a match must reach (at most, for sqdiff); exit 1 if none does."),
    ] = None,
    min_distance: Annotated[
        int | None,
        typer.Option(help="Pixels between reported matches, in x or y (default: half the probe)."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="ncc: zero-mean normalised cross-correlation in [-1, 1]; sqdiff: sum of "
            "squared differences (lower is better); ccorr: plain correlation.",
            click_type=_choice(names.MATCH_METHODS),
        ),
    ] = names.NCC,
    mask: Annotated[
        str,
        typer.Option(
            help="auto: the probe's alpha, if it has one; none; or a mask image FILE "
            "(grey, or its alpha; white counts, black is ignored)."
        ),
    ] = "auto",
    scene_mask: Annotated[
        str,
        typer.Option(
            help="Known scene pixels: auto: the scene's alpha, if it has one; none; or a mask "
            "image FILE (white known, black unknown). NaN pixels of a float scene are unknown."
        ),
    ] = "auto",
    min_overlap: Annotated[
        float,
        typer.Option(
            help="With unknown scene pixels: the share of the probe's weight a window must "
            "overlap known pixels with to be scored (0 < F <= 1). sqdiff and ccorr sums over "
            "a partial overlap are scaled up to the whole probe's weight."
        ),
    ] = 0.5,
    scales: Annotated[
        str | None,
        typer.Option(
            help="Search the probe scaled: A..B (steps moving its edge ~1 px), A..B:N "
            "(N geometric steps) or a list A,B,C."
        ),
    ] = None,
    angles: Annotated[
        str | None,
        typer.Option(
            help="Search the probe turned (degrees, counter-clockwise on screen): A..B "
            "(steps moving its corner ~1 px), A..B:STEP or a list A,B,C."
        ),
    ] = None,
    gray: Annotated[
        bool, typer.Option("--gray", help="Match on luminance (Rec. 601 weights).")
    ] = False,
    annotate: Annotated[
        Path | None, typer.Option(help="Write the scene with a box and score per match (PNG).")
    ] = None,
    heatmap: Annotated[
        Path | None, typer.Option(help="Write the score map as a colour image the scene's size.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Print the matches as CSV on stdout instead of a table.")
    ] = False,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="Convolution strategy for the correlations (--method names the score here).",
            click_type=_choice(names.STRATEGY_CHOICES),
        ),
    ] = names.AUTO,
    explain: ExplainOption = False,
    force: ForceOption = False,
    max_pixels: MaxPixelsOption = None,
    quiet: QuietOption = False,
    memory: MemoryOption = None,
) -> None:
    """Find where PROBE appears in SCENE: the best matches, best first.

    A TIFF or Zarr scene whose working set exceeds --memory is matched by tiles (the same
    matches as in memory), without --annotate, --heatmap, --gray, --scales or --angles.
    """
    with cli_errors():
        import time

        from . import matching
        from .errors import ConvfiltError

        started = time.perf_counter()
        matching.check_peak_options(top=top, min_distance=min_distance, min_score=min_score)
        _check_match_inputs([scene, probe, mask, scene_mask], as_json=as_json, as_csv=as_csv)
        outputs = _match_outputs(scene, annotate=annotate, heatmap=heatmap, force=force)
        streamed = _match_stream_route(scene, memory, explain)
        if streamed is not None:
            in_memory = {"--annotate": annotate, "--heatmap": heatmap, "--gray": gray,
                         "--scales": scales, "--angles": angles,
                         "--scene-mask FILE": scene_mask not in ("auto", "none")}  # fmt: skip
            _match_streamed(
                streamed, (scene, probe, mask), in_memory,
                method=method, max_pixels=max_pixels, min_score=min_score,
                options={"top": top, "min_distance": min_distance, "min_overlap": min_overlap},
                output=_output_form(as_json, as_csv), started=started, explain=explain,
            )  # fmt: skip
            return
        loaded = _match_inputs(
            scene, probe, mask=mask, scene_mask=scene_mask, gray=gray, max_pixels=max_pixels
        )
        if scales is not None or angles is not None:
            _match_search(
                loaded, (scales or "1", angles or "0"), outputs, method=method,
                options={"top": top, "min_distance": min_distance, "min_overlap": min_overlap},
                min_score=min_score, output=_output_form(as_json, as_csv), force=force,
                started=started,
            )  # fmt: skip
            return
        scored = _match_scores(
            loaded, method=method, min_overlap=min_overlap, strategy=strategy, explain=explain
        )
        found = matching.find_matches(
            scored.scores, probe_shape=scored.probe_shape, method=method, top=top,
            min_score=min_score, min_distance=min_distance,
        )  # fmt: skip
        elapsed_ms = (time.perf_counter() - started) * 1e3
        if not found:
            anywhere = matching.find_matches(
                scored.scores, probe_shape=scored.probe_shape, method=method
            )
            best = f" (best {anywhere[0].score:.6g})" if anywhere else " (no score is a number)"
            reaches = "" if min_score is None else f" reaches --min-score {min_score:g}"
            raise ConvfiltError(f"{scene}: no match{reaches}{best}")
        _save_match_pictures(scored, found, outputs, method=method, force=force)
        _print_match_results(
            (loaded.scene_name, loaded.probe_name),
            found,
            method=method,
            output=_output_form(as_json, as_csv),
            elapsed_ms=elapsed_ms,
        )


def _check_match_inputs(inputs: list[str], *, as_json: bool, as_csv: bool) -> None:
    """At most one of SCENE, PROBE, --mask, --scene-mask reads stdin; --json or --csv."""
    from . import images
    from .errors import UsageError

    if inputs.count(images.STDIO) > 1:
        raise UsageError("only one of SCENE, PROBE, --mask and --scene-mask can read stdin ('-')")
    if as_json and as_csv:
        raise UsageError("--json and --csv do not go together; give one")


def _match_stream_route(scene: str, memory: str | None, explain: bool) -> tuple[Any, int] | None:
    """A row reader and the budget when SCENE is a TIFF/Zarr whose matching working set
    exceeds the memory budget; None: match it in memory as before. A scene of another format
    (decoded whole) over a budget given with --memory is refused up front, naming its size."""
    from . import scan, streams, tiles

    budget = tiles.parse_size(memory) if memory else tiles.default_budget()
    shape, _ = streams._header(scene)
    need = scan.whole_scene_bytes(shape)
    if need <= budget:
        if explain:
            report.message(
                f"{scene}: in memory: ~{tiles.format_size(need)} within the budget "
                f"{tiles.format_size(budget)}"
            )
        return None
    if not streams.is_stream_path(scene):
        if memory is None:  # no budget asked for: a photo is matched in memory, as it was
            return None
        raise tiles.over_budget(
            scene, "matching a {} scene", shape, need, budget,
            "this format is decoded whole - convert it to a TIFF or Zarr (.tif, .zarr), "
            "which are matched by tiles",
        )  # fmt: skip
    return streams.open_rows(scene), budget


def _match_streamed(
    streamed: tuple[Any, int],
    files: tuple[str, str, str],
    in_memory: Mapping[str, object],
    *,
    method: str,
    max_pixels: int | None,
    min_score: float | None,
    options: dict[str, Any],
    output: str,
    started: float,
    explain: bool = False,
) -> None:
    """Match a streamed scene by tiles (convfilt.scan) and print the matches."""
    import time

    from . import images, matching, scan, tiles
    from .errors import ConvfiltError, UsageError

    reader, budget = streamed
    scene, probe, mask = files
    refused = [flag for flag, value in in_memory.items() if value]
    try:
        if refused:
            raise UsageError(
                f"{scene} streams (over the --memory budget): {', '.join(refused)} need the "
                "scene in memory; raise --memory or leave them out"
            )
        picture = images.load(probe, max_pixels=max_pixels)
        pixels, alpha = matching.split_alpha(picture.pixels, picture.has_alpha)
        weights = _match_mask(mask, alpha, max_pixels=max_pixels)
        if explain:
            cells = scan.tiling(reader.shape, pixels.shape, reader.dtype.itemsize, budget)
            report.message(
                f"{scene}: streamed: scored by tiles of {cells.rows}x{cells.cols} placements, "
                f"budget {tiles.format_size(budget)}"
            )
        with report.progress_bar(Path(scene).name) as update:
            found = scan.scan_matches(
                reader, pixels, budget=budget, method=method, mask=weights,
                scene_has_alpha=reader.has_alpha, **options,
                progress=lambda done: update("tiles", done),
            )  # fmt: skip
    finally:
        reader.close()
    sign = 1.0 if matching.higher_is_better(method) else -1.0
    kept = [m for m in found if min_score is None or sign * m.score >= sign * min_score]
    if not kept:
        raise ConvfiltError(
            f"{scene}: no match reaches --min-score {min_score:g} (best {found[0].score:.6g})"
        )
    elapsed_ms = (time.perf_counter() - started) * 1e3
    _print_match_results((scene, probe), kept, method=method, output=output, elapsed_ms=elapsed_ms)


@dataclass(frozen=True)
class _Loaded:
    """What ``match`` reads: the files' names, the scene picture, both images' pixels and
    weights (the probe's mask; the scene's known pixels), as the library takes them."""

    scene_name: str
    probe_name: str
    masks: tuple[str, str]  # --mask, --scene-mask as given
    scene: Picture
    scene_pixels: NDArray[Any]
    scene_weights: NDArray[np.float64] | None
    probe_pixels: NDArray[Any]
    probe_weights: NDArray[np.float64] | None


@dataclass(frozen=True)
class _Scored:
    """A scene, the probe's shape and the score map of one ``match`` run."""

    scene: Picture
    scene_shape: tuple[int, ...]
    probe_shape: tuple[int, ...]
    scores: NDArray[np.float64]


def _match_inputs(
    scene: str, probe: str, *, mask: str, scene_mask: str, gray: bool, max_pixels: int | None
) -> _Loaded:
    """Load SCENE, PROBE and their masks (alpha, mask files), luminance if ``gray``."""
    from . import images, matching

    scene_picture = images.load(scene, max_pixels=max_pixels)
    probe_picture = images.load(probe, max_pixels=max_pixels)
    scene_pixels, scene_alpha = matching.split_alpha(scene_picture.pixels, scene_picture.has_alpha)
    probe_pixels, alpha = matching.split_alpha(probe_picture.pixels, probe_picture.has_alpha)
    weights = _match_mask(mask, alpha, max_pixels=max_pixels)
    scene_weights = _match_mask(scene_mask, scene_alpha, max_pixels=max_pixels)
    if gray:
        scene_pixels = matching.luminance(scene_pixels)
        probe_pixels = matching.luminance(probe_pixels)
    return _Loaded(
        scene, probe, (mask, scene_mask), scene_picture, scene_pixels, scene_weights,
        probe_pixels, weights,
    )  # fmt: skip


@contextmanager
def _files_named(loaded: _Loaded) -> Iterator[None]:
    """Errors about the inputs (shapes that do not fit, values out of range) name the files
    they came from (``_naming_files``)."""
    from .errors import ConvfiltError

    try:
        yield
    except ConvfiltError as exc:
        raise _naming_files(
            exc, scene=loaded.scene_name, probe=loaded.probe_name, mask=loaded.masks[0]
        ) from None


def _match_scores(
    loaded: _Loaded, *, method: str, min_overlap: float, strategy: str, explain: bool
) -> _Scored:
    """Score every window of the scene."""
    from . import matching

    with _files_named(loaded):
        scores = matching.match_template(
            loaded.scene_pixels,
            loaded.probe_pixels,
            method=method,
            mask=loaded.probe_weights,
            scene_mask=loaded.scene_weights,
            min_overlap=min_overlap,
            strategy=strategy,
            on_plan=report.explain if explain else None,
        )
    shapes = loaded.scene_pixels.shape, loaded.probe_pixels.shape
    return _Scored(loaded.scene, *shapes, scores)


def _match_turned(
    loaded: _Loaded, grid: tuple[str, str], options: dict[str, Any], *, heat: bool
) -> tuple[list[TurnedMatch], _Scored, list[list[tuple[float, float]]]]:
    """``--scales/--angles``: the search's matches (best first, at least one), the score map
    at the best match's scale and angle (only if ``heat``: for ``--heatmap``), and each
    match's turned outline (for ``--annotate``)."""
    import numpy as np

    from . import search

    with _files_named(loaded):
        found = search.search_template(
            loaded.scene_pixels,
            loaded.probe_pixels,
            scales=grid[0],
            angles=grid[1],
            mask=loaded.probe_weights,
            scene_mask=loaded.scene_weights,
            **options,
        )
    best = found[0]
    scores, box = np.full((1, 1), np.nan), loaded.probe_pixels.shape[:2]
    if heat:
        scores, box = search.score_map(
            loaded.scene_pixels,
            loaded.probe_pixels,
            scale=best.scale,
            angle=best.angle,
            mask=loaded.probe_weights,
            scene_mask=loaded.scene_weights,
            min_overlap=options["min_overlap"],
        )
    outlines = [search.corners(m, loaded.probe_pixels.shape) for m in found]
    return found, _Scored(loaded.scene, loaded.scene_pixels.shape, box, scores), outlines


def _naming_files(exc: ConvfiltError, *, scene: str, probe: str, mask: str) -> ConvfiltError:
    """``exc`` (same type) with the files it is about in front: the scene's or the probe's
    when the message is about that one alone, else all of them."""
    words = str(exc).split()
    files = [scene, probe] + ([] if mask in ("auto", "none") else [f"--mask {mask}"])
    if words[0] in ("scene", "probe") and sum(w in ("scene", "probe", "mask") for w in words) == 1:
        files = [scene if words[0] == "scene" else probe]
    return type(exc)(f"{', '.join(files)}: {exc}", parameters=exc.parameters)


def _save_match_pictures(
    scored: _Scored,
    found: Sequence[Match],
    outputs: dict[str, Path],
    *,
    method: str,
    force: bool,
    outlines: list[list[tuple[float, float]]] | None = None,
) -> None:
    """Write the ``--annotate`` and ``--heatmap`` pictures that were asked for."""
    from dataclasses import replace

    from . import images, render

    if "annotate" in outputs:
        scene = scored.scene
        rgb = render.display_rgb(scene.pixels, scene.has_alpha)
        pixels = render.draw_matches(rgb, found, outlines)
        images.save(
            replace(scene, pixels=pixels, has_alpha=False), outputs["annotate"], force=force
        )
    if "heatmap" in outputs:
        colours = render.heatmap(
            scored.scores,
            scene_shape=scored.scene_shape,
            probe_shape=scored.probe_shape,
            method=method,
        )
        picture = images.Picture(pixels=colours, has_alpha=False, source=scored.scene.source)
        images.save(picture, outputs["heatmap"], force=force)
    for path in outputs.values():
        report.message(f"wrote {path}")


def _match_search(
    loaded: _Loaded,
    grid: tuple[str, str],
    outputs: dict[str, Path],
    *,
    method: str,
    options: dict[str, Any],
    min_score: float | None,
    output: str,
    force: bool,
    started: float,
) -> None:
    """``match --scales/--angles``: search, keep what reaches ``min_score``, write, print."""
    import time

    from .errors import ConvfiltError, UsageError

    if method != names.NCC:
        raise UsageError("--scales and --angles search with --method ncc only")
    turned, pictured, outlines = _match_turned(loaded, grid, options, heat="heatmap" in outputs)
    kept = [m for m in turned if min_score is None or m.score >= min_score]
    if not kept:
        raise ConvfiltError(
            f"{loaded.scene_name}: no match reaches --min-score {min_score:g} "
            f"(best {turned[0].score:.6g})"
        )
    elapsed_ms = (time.perf_counter() - started) * 1e3
    _save_match_pictures(pictured, kept, outputs, method=method, force=force, outlines=outlines)
    _print_match_results(
        (loaded.scene_name, loaded.probe_name),
        kept,
        method=method,
        output=output,
        elapsed_ms=elapsed_ms,
    )


def _output_form(as_json: bool, as_csv: bool) -> str:
    return "json" if as_json else "csv" if as_csv else "table"


def _print_match_results(
    files: tuple[str, str], found: Sequence[Match], *, method: str, output: str, elapsed_ms: float
) -> None:
    """The matches on stdout: one JSON object (``output`` "json"), CSV, or a table."""
    if output == "json":
        report.print_json(
            {
                "scene": files[0],
                "probe": files[1],
                "method": method,
                "matches": [vars(found_match) for found_match in found],
                "elapsed_ms": round(elapsed_ms, 3),
            }
        )
    elif output == "csv":
        report.match_csv(found)
    else:
        report.match_table(found, method)


def _match_outputs(
    scene: str, *, annotate: Path | None, heatmap: Path | None, force: bool
) -> dict[str, Path]:
    """Check the --annotate / --heatmap targets before any work, their formats too (both
    pictures are 8-bit RGB); name them by option."""
    import numpy as np

    from . import images
    from .errors import UsageError

    rgb = np.zeros((1, 1, 3), np.uint8)

    outputs: dict[str, Path] = {}
    for option, path in (("annotate", annotate), ("heatmap", heatmap)):
        if path is None:
            continue
        target = images.resolve_output(scene, "match", out=path, force=force)
        if str(target) == images.STDIO:
            raise UsageError(f"--{option}: stdout carries the matches; name a file")
        if Path(target) in outputs.values():
            raise UsageError(f"--{option}: {target} is already the other output")
        try:
            images.check_can_hold(rgb, str(target))
        except UsageError as exc:
            raise UsageError(f"--{option} {exc}") from None
        outputs[option] = Path(target)
    return outputs


def _match_mask(
    option: str, alpha: NDArray[np.float64] | None, *, max_pixels: int | None
) -> NDArray[np.float64] | None:
    """The probe's weights for ``--mask``: its alpha (auto), none, or a mask image's."""
    from . import images, matching

    if option in ("auto", "none"):
        return alpha if option == "auto" else None
    picture = images.load(option, max_pixels=max_pixels)
    return matching.mask_weights(picture.pixels, picture.has_alpha, name=option)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt (SIGINT), so every ``finally``
    runs and no temporary file is left behind; the exit code is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def _catch_termination() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated`, unless they are ignored (``nohup``)."""
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, _terminate)


class _OneLineLog(logging.Handler):
    """A library's log records (tifffile's) as one-line warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        report.warning(f"{record.name}: {record.getMessage()}")


def _one_line_warnings(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    report.warning(f"{category.__name__}: {message}")


def _route_library_chatter() -> None:
    """Python warnings (Pillow's UserWarnings, numpy's) and tifffile's log lines as one-line
    ``convfilt: warning:`` messages, without the source paths and code lines Python adds."""
    warnings.showwarning = _one_line_warnings
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(_OneLineLog(logging.WARNING))
    tifffile_log.propagate = False


def main() -> None:
    """Run the command line in this process (the work of :func:`run`, the process's entry).

    The one place that changes process-wide state: the allocator keeps freed blocks
    (``memory.retain_freed_blocks``; ``CONVFILT_MALLOC=system`` opts out), since every
    road allocates blocks of megabytes. A library user opts in with the same call. BLAS runs
    on one thread (``OPENBLAS_NUM_THREADS``, unless the user set it, before numpy loads), as
    band lanes and Dask workers run it: OpenBLAS's threaded products round some shapes
    differently (1 ulp), which would make a streamed or remote run's bytes differ from an
    in-memory one's, and its threads spin on a busy machine (docs/performance.md, §8). For
    the same reason the compiled road's OpenMP threads sleep when idle rather than spin
    (``OMP_WAIT_POLICY=passive``, unless set): between bands they took the cores the reading
    and writing threads needed.
    SIGTERM and SIGHUP unwind like SIGINT (:class:`Terminated`), so no temporary file is left.
    """
    from .memory import retain_freed_blocks

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    _catch_termination()
    _route_library_chatter()
    try:
        retain_freed_blocks()
        app(prog_name="convfilt")
    except Terminated as exc:  # outside a command (while starting up): quietly, with the code
        raise SystemExit(128 + exc.signum) from None


def run() -> None:
    """Entry point for ``python -m convfilt`` and the console script: :func:`main`, then the
    process ends without Python's teardown.

    Tearing down the interpreter (freeing every module's objects, numba's and LLVM's among
    them) took ~0.2 s after a compiled-road run, a tenth of a 12288² streamed blur
    (docs/performance.md, §12), and produces nothing: every output is already committed and
    synced when a command returns (convfilt keeps no file open past its command). So an exit
    handler registered here, which runs after the handlers registered during the command
    (temporary folders, Dask's) and once threads are joined, flushes standard output and
    error, shuts logging down (its handler, registered at import, would otherwise not run)
    and ends the process with the command's status. A flush that fails (a full disk behind a
    redirect) leaves the normal exit to report it.

    Only when no other handler was registered before this entry (:func:`_only_loggings`): a
    site hook's (coverage's subprocess measurement, a profiler's) makes the process end the
    normal way. For a process's entry only: run in-process, it would end the host process;
    :func:`main` is the in-process call.
    """
    status: list[int] = []
    if _only_loggings():
        atexit.register(_end_without_teardown, status)
    try:
        main()
    except SystemExit as done:
        status.append(_exit_status(done.code))
        raise


def _only_loggings() -> bool:
    """Whether the only exit handler registered so far is logging's (``convfilt.cli`` imports
    logging); False where this Python does not say (``atexit._ncallbacks``)."""
    count = getattr(atexit, "_ncallbacks", None)
    return count is not None and count() <= 1


def _exit_status(code: object) -> int:
    """The status Python gives ``SystemExit(code)``: 0 for None, the int, else 1 (a message)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _end_without_teardown(status: list[int]) -> None:
    """End the process now with ``status`` (see :func:`run`), once its output is flushed."""
    if not status:  # an unexpected exception: Python's own exit reports it
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    logging.shutdown()
    os._exit(status[0])
