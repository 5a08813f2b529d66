"""convfilt kernel: the facts against their definitions, the table, JSON and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner, Result

from convfilt import kernels
from convfilt.cli import app

from .processes import convfilt

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("spec", ["sobel-x", "emboss", "gaussian:1.5", "box:4", "motion:9:30"])
def test_facts_follow_from_the_definitions(spec: str) -> None:
    k = kernels.load_kernel(spec)
    facts = kernels.describe(k, size=32)
    np.testing.assert_array_equal(facts.flipped, k[::-1, ::-1])
    assert facts.symmetric == bool(np.array_equal(k, k[::-1, ::-1]))
    assert facts.rank == np.linalg.matrix_rank(k)
    assert facts.separable == (facts.rank == 1)
    assert facts.sum == pytest.approx(k.sum())
    assert facts.dc_gain == pytest.approx(abs(k.sum()))
    padded = np.zeros((32, 32))
    padded[: k.shape[0], : k.shape[1]] = k
    expected = np.abs(np.fft.fftshift(np.fft.fft2(padded)))
    np.testing.assert_allclose(facts.response, expected, atol=1e-12)
    assert facts.response[16, 16] == pytest.approx(abs(k.sum()))  # zero frequency at the centre
    # the claim the table makes: convolve == correlate exactly when same_result says so
    image = np.random.default_rng(0).random((20, 24))
    same = np.allclose(ndimage.convolve(image, k), ndimage.correlate(image, k), atol=1e-12)
    assert same == facts.same_result


def test_table_json_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = run("kernel", "sobel-x")
    assert table.exit_code == 0, table.stderr
    assert "convolve == correlate" in table.stdout and "rank" in table.stdout
    document = json.loads(run("kernel", "sobel-x", "--json").stdout)
    assert document["shape"] == [3, 3] and document["rank"] == 1 and document["separable"]
    assert document["symmetric"] is False and document["sum"] == 0.0
    assert document["flipped"][0] == [-1.0, 0.0, 1.0] and document["dc_gain"] == 0.0
    drawn = run("kernel", "emboss", "--plot", "k.png", "--size", "32")
    assert drawn.exit_code == 0, drawn.stderr
    assert Path("k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = Path("k.png").read_bytes()
    again = run("kernel", "box:3", "--plot", "k.png")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert Path("k.png").read_bytes() == before
    assert run("kernel", "box:3", "--plot", "k.png", "--force").exit_code == 0
    assert Path("k.png").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.png"]  # no temporary left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "no such file"),
        (["gaussian:1", "--size", "4"], "--size 4 is smaller"),
        (["sobel-x", "--plot", "k.jpg"], "PNG"),
    ],
)
def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("kernel", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_piped_table_is_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = convfilt("kernel", "emboss")
    assert done.returncode == 0, done.stderr
    assert "+--" in done.stdout and "┃" not in done.stdout  # an ASCII box when piped
    assert "\x1b[" not in done.stdout
