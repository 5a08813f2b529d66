"""The conventions of command-line tools: --version, -h, -q, completion, plain text when
piped, CSV and JSON for scripts, quoted globs, one suggestion for a mistyped command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import convfilt
from convfilt.cli import app

from .processes import convfilt as convfilt_process

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
FACE, PATCH = ROOT / "samples" / "face.png", ROOT / "samples" / "patch-probe.png"
BOX_DRAWING = set("─━│┃┌┐└┘├┤┬┴┼╭╮╯╰═║╞╡")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.jpg"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(name)
    return tmp_path


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0
    assert result.stdout == f"convfilt {convfilt.__version__}\n"


def test_version_in_a_real_process() -> None:
    done = convfilt_process("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"convfilt {convfilt.__version__}"


def test_dash_h_is_help_for_the_tool_and_its_commands() -> None:
    assert runner.invoke(app, ["-h"]).stdout == runner.invoke(app, ["--help"]).stdout
    blur = runner.invoke(app, ["blur", "-h"])
    assert blur.exit_code == 0 and "--sigma" in blur.stdout


def test_shell_completion_is_offered() -> None:
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_piped_help_is_plain_text_with_whole_choice_lists() -> None:
    done = convfilt_process("blur", "--help")
    assert done.returncode == 0
    assert not BOX_DRAWING & set(done.stdout), done.stdout
    assert "[reflect|mirror|nearest|wrap|constant]" in done.stdout
    assert "[auto|direct|separable|fft|overlap-add|compiled]" in done.stdout


def test_piped_tables_have_no_box_drawing() -> None:
    table = runner.invoke(app, ["match", str(FACE), str(PATCH)])
    assert table.exit_code == 0
    assert "132" in table.stdout and not BOX_DRAWING & set(table.stdout)
    shown = runner.invoke(app, ["calibrate", "--show"])
    assert "direct_float32" in shown.stdout and not BOX_DRAWING & set(shown.stdout)


def test_match_csv_carries_what_json_carries() -> None:
    as_csv = runner.invoke(app, ["match", str(FACE), str(PATCH), "--top", "2", "--csv"])
    as_json = runner.invoke(app, ["match", str(FACE), str(PATCH), "--top", "2", "--json"])
    assert as_csv.exit_code == 0 and as_json.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    matches = json.loads(as_json.stdout)["matches"]
    assert [int(row["rank"]) for row in rows] == list(range(1, len(matches) + 1))
    for row, expected in zip(rows, matches, strict=True):
        assert {key: float(value) for key, value in row.items() if key != "rank"} == expected
    both = runner.invoke(app, ["match", str(FACE), str(PATCH), "--csv", "--json"])
    assert both.exit_code == 2 and "--csv" in both.stderr


def test_calibrate_json_is_one_object_with_the_constants(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONVFILT_CACHE_DIR", str(tmp_path))
    result = runner.invoke(app, ["calibrate", "--show", "--json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert "shipped defaults" in document["title"]
    assert document["constants"] == document["defaults"]
    assert document["constants"]["direct_float32"] > 0


def test_quiet_leaves_only_results_and_errors(folder: Path) -> None:
    loud = runner.invoke(app, ["blur", "a.png", "-o", "loud.png"])
    assert loud.stderr.strip() == "wrote loud.png"
    for args in (["-q", "blur", "a.png", "-o", "q1.png"], ["blur", "a.png", "-o", "q2.png", "-q"]):
        quiet = runner.invoke(app, args)
        assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert (folder / "q1.png").read_bytes() == (folder / "loud.png").read_bytes()
    failed = runner.invoke(app, ["-q", "blur", "missing.png"])
    assert failed.exit_code == 1 and "missing.png" in failed.stderr
    again = runner.invoke(app, ["blur", "a.png", "-o", "again.png"])  # -q was for one run
    assert again.stderr.strip() == "wrote again.png"


def test_an_image_on_stdout_gets_no_wrote_line(folder: Path) -> None:
    result = runner.invoke(app, ["blur", "a.png", "-o", "-"])
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout_bytes.startswith(b"\x89PNG")


def test_a_quoted_glob_is_expanded_in_sorted_order(folder: Path) -> None:
    result = runner.invoke(app, ["blur", "*.png", "--out-dir", "out", "--json"])
    assert result.exit_code == 0, result.stderr
    inputs = [entry["input"] for entry in json.loads(result.stdout)["outputs"]]
    assert inputs == ["a.png", "b.png"]
    none = runner.invoke(app, ["blur", "*.gif"])
    assert none.exit_code == 2 and "*.gif: no file matches" in none.stderr


def test_a_file_named_like_a_pattern_is_taken_as_it_is(folder: Path) -> None:
    (folder / "a.png").rename(folder / "[a].png")
    result = runner.invoke(app, ["blur", "[a].png", "-o", "x.png"])
    assert result.exit_code == 0, result.stderr


def test_a_mistyped_command_gets_one_suggestion() -> None:
    result = runner.invoke(app, ["blurr"])
    assert result.exit_code == 2
    assert result.stderr.count("Did you mean") == 1, result.stderr
    assert "'blur'" in result.stderr
