"""The cost model: estimates, constants on disk, the fit, and a (tiny) calibration run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convfilt import bench, calibration, cost, engine


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVFILT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_constants_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert calibration.constants_path() == tmp_path / "cache" / "constants.json"
    monkeypatch.delenv("CONVFILT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert calibration.constants_path() == tmp_path / "xdg" / "convfilt" / "constants.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        calibration.constants_path() == tmp_path / "home" / ".cache" / "convfilt" / "constants.json"
    )


def test_defaults_are_valid_and_say_where_they_come_from() -> None:
    defaults = calibration.default_constants()
    assert defaults.source
    for strategy in ("direct", "separable", "fft"):
        for dtype in cost.DTYPES:
            assert defaults.rate(strategy, dtype) > 0
    # float64 work is not cheaper than float32 work
    assert defaults.rate("direct", np.float64) >= defaults.rate("direct", np.float32)


def test_save_load_reset_round_trip(cache_dir: Path) -> None:
    assert calibration.load_constants() == calibration.default_constants()
    assert calibration.reset_constants() is False
    mine = replace(calibration.default_constants(), direct_float32=1.0, source="test")
    path = calibration.save_constants(mine)
    assert path == cache_dir / "constants.json"
    assert json.loads(path.read_text())["direct_float32"] == 1.0
    assert calibration.load_constants() == mine
    assert calibration.reset_constants() is True
    assert not path.exists()
    assert calibration.load_constants() == calibration.default_constants()


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"direct_float32": 1}', '{"direct_float32": "fast"}']
)
def test_invalid_stored_constants_fall_back_to_defaults(cache_dir: Path, text: str) -> None:
    cache_dir.mkdir(parents=True)
    (cache_dir / "constants.json").write_text(text)
    assert calibration.load_constants() == calibration.default_constants()


def test_from_json_rejects_negative_and_non_finite() -> None:
    good = calibration.default_constants().to_json()
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError):
            cost.Constants.from_json({**good, "fft_fixed": bad})


def test_the_planner_follows_stored_constants() -> None:
    kernel = np.random.default_rng(0).random((3, 3))
    banded = ("direct", "compiled")  # compiled once this process has loaded it
    assert engine.plan((64, 64), kernel).strategy in banded
    slow = replace(calibration.default_constants(), direct_float32=1.0, compiled_float32=1.0)
    calibration.save_constants(slow)
    assert engine.plan((64, 64), kernel).strategy not in banded
    assert engine.plan((64, 64), kernel, dtype=np.float64).strategy in banded


def test_fit_rate_recovers_a_linear_law() -> None:
    work = [1e6, 3e6, 1e7, 5e7, 2e8]
    seconds = [2e-10 * w + 3e-4 for w in work]
    rate, fixed = bench.fit_rate(work, seconds)
    assert rate == pytest.approx(2e-10, rel=1e-6)
    assert fixed == pytest.approx(3e-4, rel=1e-6)
    # one point: the rate alone, through it
    rate, fixed = bench.fit_rate([1e6], [2e-3])
    assert (rate, fixed) == (pytest.approx(2e-9), 0.0)


def test_fit_terms_separates_the_serial_share_of_threaded_transforms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Transforms on one thread and on two: the fit recovers the divided rate and the serial
    share (the calibration's FFT model); a transform on one thread has no serial share."""
    monkeypatch.setattr(cost, "available_cores", lambda: 2)  # also on a one-core machine
    shapes = [cost.Shape(n, n, 1, 1, 9, 9) for n in (64, 200, 400, 700, 1000, 2000, 3000)]
    truth = replace(calibration.default_constants(), fft_float32=1e-10, fft_serial_float32=6e-11)
    seconds = [cost.estimate("fft", s, np.float32, truth) for s in shapes]
    terms = [[cost.fft_work(s) for s in shapes], [cost.fft_serial(s) for s in shapes]]
    rate, serial, fixed = bench.fit_terms([*terms, [1.0] * len(shapes)], seconds)
    assert (rate, serial) == (pytest.approx(1e-10, rel=1e-6), pytest.approx(6e-11, rel=1e-6))
    assert fixed == pytest.approx(truth.fft_fixed, rel=1e-6)
    assert cost.fft_serial(shapes[0]) == 0.0  # below PARALLEL_FFT_SIZE: one thread
    assert cost.fft_serial(shapes[-1]) > 0.0


def test_transform_threads_caps_workers_and_the_estimates_see_it() -> None:
    big = cost.Shape(2000, 2000, 1, 1, 9, 9)
    c = calibration.default_constants()
    assert cost.fft_workers(2**22) == cost.available_cores()
    free = cost.estimate("fft", big, np.float32, c)
    with cost.transform_threads(1):
        assert cost.fft_workers(2**22) == 1
        capped = cost.estimate("fft", big, np.float32, c)
    assert cost.fft_workers(2**22) == cost.available_cores()
    if cost.available_cores() > 1:
        assert capped > free
        assert cost.fft_serial(big) > 0.0
    with cost.transform_threads(1):
        assert cost.fft_serial(big) == 0.0
    assert cost.estimate("fft", big, np.float32, c) == free


def test_a_cap_with_until_lifts_when_until_turns_true_to_the_enclosing_cap() -> None:
    """``until``: the cap holds while the caller's side work runs, then the transforms get
    what they had outside the block; a block inside keeps its own cap regardless."""
    done = [False]
    everyone = cost.available_cores()
    with cost.transform_threads(1, until=lambda: done[0]):
        assert cost.fft_workers(2**22) == 1
        done[0] = True
        assert cost.fft_workers(2**22) == everyone
        with cost.transform_threads(1):
            assert cost.fft_workers(2**22) == 1
    with cost.transform_threads(1), cost.transform_threads(2, until=lambda: True):
        assert cost.fft_workers(2**22) == 1  # lifted to the enclosing cap, not beyond it
    assert cost.fft_workers(2**22) == everyone


def test_an_estimate_is_made_under_the_cap_it_is_remembered_for() -> None:
    """The cap can lift mid-call (``until``): an estimate keyed by the cap in force when it was
    asked for is priced under that cap, not under one lifted while it was being made."""
    if cost.available_cores() < 2:
        pytest.skip("one core here: every cap prices one thread")
    big = cost.Shape(2000, 2000, 1, 1, 9, 9)
    c = calibration.default_constants()
    asked = [0]

    def lifts_once_asked() -> bool:  # false for the key, true from then on
        asked[0] += 1
        return asked[0] > 1

    for strategy in ("fft", "overlap-add"):
        cost._estimate.cache_clear()
        cost._overlap_tile.cache_clear()
        asked[0] = 0
        with cost.transform_threads(1, until=lifts_once_asked):
            remembered = cost.estimate(strategy, big, np.float32, c)
        cost._estimate.cache_clear()
        cost._overlap_tile.cache_clear()
        with cost.transform_threads(1):
            assert remembered == cost.estimate(strategy, big, np.float32, c), strategy


def test_estimates_grow_with_the_work() -> None:
    c = calibration.default_constants()

    def seconds(strategy: str, size: int, n: int, channels: int = 1) -> float:
        return cost.estimate(strategy, cost.Shape(size, size, channels, 1, n, n), np.float32, c)

    for strategy in engine.STRATEGIES:
        assert seconds(strategy, 256, 9) < seconds(strategy, 1024, 9)
        assert seconds(strategy, 512, 9) < seconds(strategy, 512, 9, channels=3)
    assert seconds("direct", 512, 3) < seconds("direct", 512, 15) < seconds("direct", 512, 41)
    assert seconds("separable", 512, 15) < seconds("direct", 512, 15)


def test_overlap_tiles_fit_the_image() -> None:
    c = calibration.default_constants()
    th, tw, seconds = cost.overlap_tile(cost.Shape(100, 3000, 1, 1, 9, 9), c, np.float32)
    assert th <= 100 and tw <= 3000 and seconds > 0


def test_calibration_round_trip_on_a_tiny_budget() -> None:
    seen: list[tuple[str, float]] = []
    fitted = bench.calibrate(lambda message, done: seen.append((message, done)), budget_s=0.5)
    assert seen and all(0.0 <= done <= 1.0 for _, done in seen)
    assert seen[-1][1] == 1.0
    for strategy in ("direct", "separable", "fft"):
        for dtype in cost.DTYPES:
            assert 0 < fitted.rate(strategy, dtype) < 1e-6
    assert fitted.source.startswith("calibrated")
    calibration.save_constants(fitted)
    assert calibration.load_constants() == fitted
    assert engine.plan((64, 64), np.ones((3, 5))).estimates  # the planner runs on them


@pytest.mark.parametrize("real", [False, True])
def test_fast_len_equals_scipy_next_fast_len(real: bool) -> None:
    """The planner's scipy-free sizes are the ones the FFT roads get from scipy."""
    import scipy.fft

    lengths = [*range(1, 3000), 4099, 8191, 10007, 16385, 65537]
    assert [cost.fast_len(n, real) for n in lengths] == [
        scipy.fft.next_fast_len(n, real=real) for n in lengths
    ]


def test_kernel_spectra_run_beside_the_image_only_where_that_pays() -> None:
    low, high = cost.CONCURRENT_SPECTRA_SIZE, cost.PARALLEL_FFT_SIZE
    second_core = cost.available_cores() >= 2
    assert cost.concurrent_spectra(low) == second_core
    assert cost.concurrent_spectra(high - 1) == second_core
    assert not cost.concurrent_spectra(low - 1)  # the handover would cost what it hides
    assert not cost.concurrent_spectra(high)  # each transform has every core already
    with cost.transform_threads(1):  # the caller keeps the other cores busy
        assert not cost.concurrent_spectra(low)
    with cost.spectra_on_the_callers_thread():  # calibrate: the road as the estimates price it
        assert not cost.concurrent_spectra(low)
    assert cost.concurrent_spectra(low) == second_core
    middle = cost.Shape(300, 300, 1, 1, 25, 25)  # 324² points: in the range
    with cost.transform_threads(1):
        alone = cost.fft_work(middle)
    assert cost.fft_work(middle) == alone  # not counted: see concurrent_spectra
