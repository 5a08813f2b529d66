"""``convfilt bench`` and ``convfilt calibrate`` from the command line.

Every run here is tiny (``--sizes 32,64 --kernels 3,9 --repeat 1``); nothing asserts a time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convfilt import bench, calibration, cost, names, report
from convfilt.cli import app

TINY = ["bench", "--sizes", "32,64", "--kernels", "3,9", "--repeat", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def own_cache_dir(monkeypatch, tmp_path) -> None:
    """Calibrated constants go to (and come from) a folder of the test's own."""
    monkeypatch.setenv("CONVFILT_CACHE_DIR", str(tmp_path / "cache"))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_usage_error(result, option: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("convfilt: error: "), result.stderr
    assert option in lines[0], result.stderr
    assert result.stdout == ""


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory) -> dict:
    """One tiny --json run shared by the schema tests (also as a real subprocess)."""
    cache = tmp_path_factory.mktemp("cache")
    proc = subprocess.run(
        [sys.executable, "-m", "convfilt", *TINY, "--compare", "scipy", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CONVFILT_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)  # the whole of stdout is one JSON document


def test_json_schema(tiny_json) -> None:
    assert set(tiny_json) >= {"machine", "records", "summary"}
    assert isinstance(tiny_json["constants"]["source"], str)  # which cost model was judged
    machine = tiny_json["machine"]
    assert set(machine) >= {"cpus", "numpy", "scipy", "blas", "python", "platform"}
    assert isinstance(machine["cpus"], int) and machine["cpus"] >= 1
    assert all(isinstance(machine[k], str) for k in ("numpy", "scipy", "blas", "python"))
    records = tiny_json["records"]
    assert [(r["size"], r["kernel"]) for r in records] == [(32, 3), (32, 9), (64, 3), (64, 9)]
    for r in records:
        assert set(r) >= {
            "size", "kernel", "times_ms", "chosen", "fastest", "regret", "predicted", "error",
            "skipped",
        }  # fmt: skip
        assert r["chosen"] in names.STRATEGIES
        assert "scipy" in r["times_ms"] and "scipy" in r["error"]
        assert r["fastest"] in r["times_ms"]
        assert isinstance(r["regret"], float) and r["regret"] > 0
        assert isinstance(r["skipped"], list) and "separable" in r["skipped"]
        for table in ("times_ms", "predicted", "error"):
            assert all(isinstance(v, float) and v >= 0 for v in r[table].values()), table
        assert set(r["predicted"]) <= set(names.STRATEGIES)
    summary = tiny_json["summary"]
    assert set(summary) >= {"crossover", "planner_accuracy", "mean_regret"}
    assert set(summary["crossover"]) == {"32", "64"}
    assert all(v is None or v in (3, 9) for v in summary["crossover"].values())
    assert 0 <= summary["planner_accuracy"] <= 1
    assert summary["mean_regret"] >= 1  # the pick is among the strategies timed


def test_tables_name_every_size_and_the_summary() -> None:
    result = invoke(*TINY)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "image 32x32 float32" in out and "image 64x64 float32" in out
    assert "crossover kernel" in out and "planner picked the fastest" in out
    assert "Traceback" not in result.output


def test_csv_has_one_row_per_cell_and_strategy_and_refuses_to_overwrite(tmp_path) -> None:
    target = tmp_path / "bench.csv"
    result = invoke(*TINY, "--methods", "direct,fft", "--csv", str(target), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    strategies = {row["strategy"] for row in rows}
    assert strategies <= {"direct", "fft", "auto"} and {"direct", "fft"} <= strategies
    by_cell = {(int(r["size"]), int(r["kernel"]), r["strategy"]): r for r in rows}
    for record in document["records"]:
        for name, ms in record["times_ms"].items():
            row = by_cell[(record["size"], record["kernel"], name)]
            assert float(row["time_ms"]) == pytest.approx(ms)
            assert (row["chosen"] == "True") == (name == record["chosen"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left

    before = target.read_bytes()
    refused = invoke(*TINY, "--csv", str(target))
    assert_usage_error(refused, "--csv")
    assert target.read_bytes() == before
    forced = invoke(*TINY, "--methods", "fft", "--csv", str(target), "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert target.read_bytes() != before


def test_plot_is_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "bench.png"
    result = invoke(*TINY, "--plot", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_plot_draws_predictions_beside_measurements_and_a_row_of_errors() -> None:
    pytest.importorskip("matplotlib")
    config = bench.BenchConfig(sizes=(32, 64), kernels=(3, 9), repeat=1, methods=("direct", "fft"))
    result = bench.run(config)
    figure = report.bench_figure(result)
    times, errors = figure.subfigs
    time_axes = [a for a in times.axes if a.get_visible()]
    assert [a.get_title().split(":")[0] for a in time_axes] == ["32x32", "64x64"]
    for axes, size in zip(time_axes, (32, 64), strict=True):
        records = [r for r in result.records if r.size == size]
        dotted = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        drawn = sorted(tuple(line.get_ydata()) for line in dotted)
        expected = sorted(
            tuple(r.predicted_ms[name] for r in records) for name in ("direct", "fft")
        )
        assert drawn == expected  # the cost model's estimates, one dotted line per road
    assert [a.get_title().split(":")[0] for a in errors.axes] == ["direct", "fft"]
    for axes, name in zip(errors.axes, ("direct", "fft"), strict=True):
        solid = [line for line in axes.get_lines() if line.get_linestyle() == "-"]
        dashed = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        measured = sorted(y for line in solid for y in line.get_ydata())
        bounds = sorted(y for line in dashed for y in line.get_ydata())
        records = result.records
        assert measured == sorted(
            r.relative_error[name] for r in records if r.relative_error[name] > 0
        )
        assert bounds == sorted(r.error_bound[name] for r in records)
        assert all(r.relative_error[name] <= r.error_bound[name] for r in records)


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    target = tmp_path / "bench.png"
    result = invoke(*TINY, "--plot", str(target))
    assert result.exit_code == 1, result.output
    assert "pip install 'convfilt[plot]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""  # failed before measuring anything
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--sizes", "abc"], "--sizes"),
        (["--sizes", "64..32"], "--sizes"),
        (["--kernels", "0"], "--kernels"),
        (["--methods", "direct,nope"], "--strategies"),
        (["--strategies", "direct,nope"], "--strategies"),
        (["--compare", "matlab"], "--compare"),
        (["--dtype", "int8"], "--dtype"),
        (["--repeat", "0"], "--repeat"),
        (["--mode", "circular"], "--mode"),
        (["--csv", "/nonexistent-folder/x.csv"], "--csv"),
    ],
)
def test_bad_options_exit_2(args, option) -> None:
    assert_usage_error(invoke("bench", *args), option)


# --- calibrate -------------------------------------------------------------------------------


def test_calibrate_show_and_reset(tmp_path) -> None:
    stored = tmp_path / "cache" / "constants.json"
    shown = invoke("calibrate", "--show")
    assert shown.exit_code == 0, shown.output
    assert "none stored" in shown.stdout and "direct_float32" in shown.stdout
    assert not stored.exists()

    defaults = calibration.default_constants()
    doubled = dataclasses.replace(defaults, direct_float32=2 * defaults.direct_float32)
    assert calibration.save_constants(doubled) == stored
    shown = invoke("calibrate", "--show")
    assert shown.exit_code == 0, shown.output
    assert "stored in" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if "direct_float32" in line)
    assert row.split()[-1] == "2.00"  # value / default

    older = doubled.to_json()
    del older["fft_serial_float32"]  # written before the model had this constant
    stored.write_text(json.dumps(older), encoding="utf-8")
    shown = invoke("calibrate", "--show")
    assert shown.exit_code == 0, shown.output
    assert "not usable" in shown.stdout and "calibrate" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if "direct_float32" in line)
    assert row.split()[-1] == "1.00"  # the defaults, which the planner uses too
    assert calibration.load_constants() == defaults

    reset = invoke("calibrate", "--reset")
    assert reset.exit_code == 0 and not stored.exists()
    assert "removed" in reset.stderr
    again = invoke("calibrate", "--reset")
    assert again.exit_code == 0 and "nothing stored" in again.stderr


def test_calibrate_measures_and_saves(monkeypatch, tmp_path) -> None:
    # the command's wiring, on a small grid (the calibration itself is tested in test_cost.py)
    small = (("direct", 64, 3), ("direct", 128, 5), ("separable", 64, 9), ("fft", 64, 15),
             ("fft", 128, 33), ("overlap-add", 128, 9))  # fmt: skip
    monkeypatch.setattr(bench, "GRID", small)
    result = invoke("calibrate", "--budget", "1")
    assert result.exit_code == 0, result.output
    stored = Path(tmp_path / "cache" / "constants.json")
    assert stored.exists()
    saved = cost.Constants.from_json(json.loads(stored.read_text()))
    assert saved.source != calibration.default_constants().source
    assert "measured cost constants" in result.stdout and "fft_float32" in result.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--show", "--reset"], "--show"), (["--budget", "0"], "--budget")],
)
def test_calibrate_bad_options_exit_2(args, option) -> None:
    assert_usage_error(invoke("calibrate", *args), option)


# --- rendering -------------------------------------------------------------------------------


def test_explain_lists_estimates_cheapest_first_with_the_notes(capsys) -> None:
    from convfilt import bench, engine

    plan = engine.plan((512, 512), bench.make_kernel(9, "float32", 0), dtype="float32")
    report.explain(plan)
    captured = capsys.readouterr()
    assert captured.out == ""  # --explain is chatter: stderr only
    rows = [line.split() for line in captured.err.splitlines()]
    named = [row[0] for row in rows if row and row[0] in plan.estimates]
    assert named == sorted(plan.estimates, key=plan.estimates.__getitem__)
    chosen_row = next(row for row in rows if row and row[0] == plan.strategy)
    assert chosen_row[1] == "(chosen)" and chosen_row[-2] == "1.00x"
    assert float(chosen_row[-1]) == pytest.approx(plan.error_bounds[plan.strategy], rel=0.1)
    assert plan.reason in " ".join(captured.err.split())
    assert any("separable" in note for note in plan.notes)
    assert all(" ".join(note.split()) in " ".join(captured.err.split()) for note in plan.notes)


def test_tables_mark_skipped_cells_and_hide_columns_that_never_apply(capsys) -> None:
    from convfilt import bench

    config = bench.BenchConfig(sizes=(64,), kernels=(3, 9), repeat=1)
    records = [
        bench.CellRecord(64, 3, "float32", {"direct": 1.0, "fft": 2.0}, {"direct": 3, "fft": 3},
                         "direct", "direct", 1.0, {"direct": 0.9, "fft": 2.1},
                         {"direct": 1e-7, "fft": 3e-7}, "ndimage-float64",
                         {"separable": bench.NOT_APPLICABLE}),
        bench.CellRecord(64, 9, "float32", {"fft": 2.0}, {"fft": 3}, "fft", "fft", 1.0,
                         {"direct": 5000.0, "fft": 2.1}, {"fft": 3e-7}, "ndimage-float64",
                         {"direct": "estimate 5.0 s > cap 2 s",
                          "separable": bench.NOT_APPLICABLE}),
    ]  # fmt: skip
    result = bench.BenchResult({"cpus": 2}, config, records, bench.summarize(records))
    report.bench_tables(result)
    out = capsys.readouterr().out
    assert "separable" not in out.split("bold green")[0]  # no column of n/a
    assert "not applicable to these kernels: separable" in " ".join(out.split())
    row_9 = next(line for line in out.splitlines() if line.split()[:1] == ["9"])
    assert row_9.split()[1:4] == ["skipped", "2", "*"]
    summary_row = next(line for line in out.splitlines() if line.split()[:1] == ["64x64"])
    assert summary_row.split()[1] == "9"  # direct skipped as too slow: fft wins at 9
