"""The CLI contract shared by every command: one-line usage errors, exit codes, help."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from convfilt import engine, names
from convfilt.cli import app

runner = CliRunner()

# Errors that Click raises while parsing, before any command body runs.
PARSE_ERRORS = [
    (["blur", "a.png", "--mode", "sideways"], "--mode"),
    (["blur", "a.png", "--sigma", "abc"], "--sigma"),
    (["blur"], "INPUT"),
    (["blur", "a.png", "--no-such-option"], "--no-such-option"),
    (["sharpen", "a.png", "--method", "bogus"], "--method"),
    (["convolve", "a.png"], "--kernel"),
    (["match", "scene.png"], "PROBE"),
    (["match", "a.png", "b.png", "--method", "sad"], "--method"),
    (["bench", "--repeat", "0"], "--repeat"),
    (["bench", "--dtype", "int8"], "--dtype"),
    (["bench", "--plot", "plot.txt"], "--plot"),
    (["no-such-command"], "no-such-command"),
]


@pytest.mark.parametrize(("args", "named"), PARSE_ERRORS)
def test_parse_errors_are_one_line_with_exit_2(args: list[str], named: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("convfilt: error: ")
    assert named in lines[0]
    assert result.stdout == ""


def test_bare_command_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "blur" in result.output and "match" in result.output


def test_help_exits_zero_and_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("blur", "sharpen", "convolve", "match", "bench", "calibrate"):
        assert command in result.stdout


def test_python_dash_m_reports_a_parse_error_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "convfilt", "blur", "a.png", "--mode", "sideways"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--mode" in proc.stderr
    assert "Traceback" not in proc.stderr


def _choices(command: str, option: str) -> list[str]:
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    found = next(p for p in params if option in p.opts)
    return list(found.type.choices)


def test_cli_choices_come_from_names_and_match_the_engine() -> None:
    assert _choices("blur", "--mode") == list(names.MODES) == list(engine.MODES)
    assert _choices("blur", "--strategy") == ["auto", *engine.STRATEGIES]
    assert _choices("blur", "--method") == ["auto", *engine.STRATEGIES]  # deprecated, hidden
    assert _choices("match", "--method") == list(names.MATCH_METHODS)
    assert _choices("match", "--strategy") == list(names.STRATEGY_CHOICES)
