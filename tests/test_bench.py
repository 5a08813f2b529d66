"""The benchmark runner (convfilt.bench): range syntax, references, timing, records, summary.

No timed assertions: where a test relies on timings it compares medians within one run, on a
case where the difference is large (hundreds of times more work).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given
from hypothesis import strategies as st

from convfilt import bench, engine
from convfilt.errors import UsageError

# --- range syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("64..2048", "sizes", (64, 128, 256, 512, 1024, 2048)),
        ("3..65", "kernels", (3, 5, 9, 17, 33, 65)),
        ("100..1000", "sizes", (128, 256, 512)),
        ("1..4", "sizes", (1, 2, 4)),
        ("4..20", "kernels", (5, 9, 17)),
        ("64,100,300", "sizes", (64, 100, 300)),
        (" 300, 64 ,100,64 ", "sizes", (64, 100, 300)),
        ("256", "sizes", (256,)),
        ("4", "kernels", (4,)),
    ],
)
def test_parse_range_accepts_the_documented_forms(text, kind, expected) -> None:
    assert bench.parse_range(text, kind) == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "sizes"),
        ("abc", "sizes"),
        ("64..", "sizes"),
        ("..64", "sizes"),
        ("1..2..3", "sizes"),
        ("64...128", "sizes"),
        ("0", "sizes"),
        ("-3", "kernels"),
        ("64,0", "sizes"),
        ("64..32", "sizes"),
        ("9..15", "sizes"),  # no power of two in it
        ("6..8", "kernels"),  # no 2^k+1 in it
        ("3.5", "kernels"),
        ("64;128", "sizes"),
    ],
)
def test_parse_range_rejects_bad_syntax_showing_the_accepted_forms(text, kind) -> None:
    with pytest.raises(UsageError) as caught:
        bench.parse_range(text, kind)
    message = str(caught.value)
    assert message.startswith(f"{kind}:")
    assert caught.value.parameters == (kind,)
    assert bench.RANGE_FORMS[kind] in message
    assert "\n" not in message


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=12))
def test_list_form_round_trips(values) -> None:
    text = ",".join(map(str, values))
    assert bench.parse_range(text, "sizes") == tuple(sorted(set(values)))
    assert bench.parse_range(text, "kernels") == tuple(sorted(set(values)))


@given(st.integers(0, 20), st.integers(0, 20))
def test_power_ranges_round_trip(a, b) -> None:
    low, high = min(a, b), max(a, b)
    assert bench.parse_range(f"{2**low}..{2**high}", "sizes") == tuple(
        2**k for k in range(low, high + 1)
    )
    if low >= 1:
        assert bench.parse_range(f"{2**low + 1}..{2**high + 1}", "kernels") == tuple(
            2**k + 1 for k in range(low, high + 1)
        )


def _members_by_walking(kind: str, low: int, high: int) -> tuple[int, ...]:
    """The range's members found by doubling from 1, a different road from the parser's."""
    offset = 0 if kind == "sizes" else 1
    power = 1 if kind == "sizes" else 2
    found = []
    while power + offset <= high:
        if power + offset >= low:
            found.append(power + offset)
        power *= 2
    return tuple(found)


@given(st.sampled_from(["sizes", "kernels"]), st.integers(1, 5000), st.integers(0, 5000))
def test_any_range_holds_exactly_its_members(kind, low, extra) -> None:
    high = low + extra
    expected = _members_by_walking(kind, low, high)
    if expected:
        assert bench.parse_range(f"{low}..{high}", kind) == expected
    else:
        with pytest.raises(UsageError):
            bench.parse_range(f"{low}..{high}", kind)


# --- the references and the peer -------------------------------------------------------------


@pytest.mark.parametrize("mode", list(bench.PAD_MODES))
@pytest.mark.parametrize("kernel_shape", [(3, 3), (4, 6), (7, 2), (1, 5), (61, 3), (4, 97)])
def test_fft_reference_and_scipy_peer_match_ndimage(monkeypatch, mode, kernel_shape) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((23, 30))
    kernel = rng.standard_normal(kernel_shape)
    expected = ndi.correlate(image, kernel, mode=mode)
    direct, name = bench.reference(image, kernel, mode)
    assert name == "ndimage-float64"
    np.testing.assert_array_equal(direct, expected)
    monkeypatch.setattr(bench, "NDIMAGE_REFERENCE_MAX_MACS", 0)
    through_fft, name = bench.reference(image, kernel, mode)
    assert name == "fft-float64"
    np.testing.assert_allclose(through_fft, expected, rtol=0, atol=1e-12)
    peer = bench.COMPARATORS["scipy"](image, kernel, mode)
    np.testing.assert_allclose(peer, expected, rtol=0, atol=1e-10)


def test_kernels_are_seeded_normalised_and_not_separable() -> None:
    kernel = bench.make_kernel(9, "float32", seed=0)
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, bench.make_kernel(9, "float32", seed=0))
    assert math.isclose(float(kernel.sum(dtype=np.float64)), 1.0, rel_tol=1e-6)
    assert np.linalg.matrix_rank(kernel.astype(np.float64)) > 1
    assert bench.make_image(16, "float64", 3).dtype == np.float64


# --- timing ----------------------------------------------------------------------------------


def _counting_run() -> tuple[list[int], Callable[[], np.ndarray]]:
    calls: list[int] = []

    def run() -> np.ndarray:
        calls.append(1)
        return np.zeros(1)

    return calls, run


def test_time_call_warms_up_then_repeats_within_budget() -> None:
    calls, run = _counting_run()
    timing = bench.time_call(run, repeat=3, budget_s=1e9)
    assert (len(calls), timing.runs) == (4, 3)  # one warm-up, three timed runs
    assert timing.seconds >= 0


def test_time_call_lets_a_slow_warm_up_be_the_measurement() -> None:
    calls, run = _counting_run()
    timing = bench.time_call(run, repeat=3, budget_s=0.0)
    assert (len(calls), timing.runs) == (1, 1)


# --- records ---------------------------------------------------------------------------------


def test_records_are_measurements_direct_grows_with_the_kernel() -> None:
    config = bench.BenchConfig(sizes=(256,), kernels=(3, 33), repeat=5, methods=("direct",))
    small = bench.measure_cell(256, 3, config)
    large = bench.measure_cell(256, 33, config)
    # 121 times the multiply-adds: the median must show it, whatever the noise
    assert large.times_ms["direct"] > 3 * small.times_ms["direct"]
    assert small.repeats["direct"] >= 1


def test_cell_errors_are_small_and_measured_against_float64() -> None:
    config = bench.BenchConfig(sizes=(64,), kernels=(9,), repeat=1, compare=("scipy",))
    bench._warm_up(config)  # as ``bench.run`` does: the plan no longer prices one-time costs
    record = bench.measure_cell(64, 9, config)
    assert record.reference == "ndimage-float64"
    ran = [m for m in config.methods if m in record.times_ms]
    assert ran and "scipy" in record.times_ms
    for name in [*ran, "scipy"]:
        # float32 data in [0, 1) and a kernel summing to 1: rounding of order 1e-7
        assert 0 <= record.error[name] < 1e-5, (name, record.error)
    plan = engine.plan((64, 64), bench.make_kernel(9, "float32", 0), dtype="float32")
    assert record.chosen == plan.strategy
    assert record.predicted_ms == pytest.approx({k: v * 1e3 for k, v in plan.estimates.items()})


def test_cell_reports_measured_error_against_the_bound() -> None:
    config = bench.BenchConfig(sizes=(64,), kernels=(9,), repeat=1)
    record = bench.measure_cell(64, 9, config)
    image = bench.make_image(64, "float32", 0)
    assert (
        record.error_bound
        == engine.plan(image.shape, bench.make_kernel(9, "float32", 0)).error_bounds
    )
    for name in record.error:
        assert record.relative_error[name] == pytest.approx(
            record.error[name] / float(np.abs(image).max())
        )
        assert 0 <= record.relative_error[name] <= record.error_bound[name]
    document = record.to_json()
    assert set(document["relative_error"]) == set(record.error)
    assert set(document["error_bound"]) == set(record.error_bound)
    result = bench.BenchResult({}, config, [record], bench.summarize([record]))
    row = result.csv_rows()[0]
    assert {"relative_error", "error_bound"} <= set(row)


def test_strategies_over_the_cap_or_not_applicable_are_skipped_not_run() -> None:
    config = bench.BenchConfig(sizes=(64,), kernels=(5,), repeat=1, cap_s=0.0)
    record = bench.measure_cell(64, 5, config)
    assert record.times_ms == {}
    assert record.fastest is None and record.regret is None
    assert record.skipped["separable"] == bench.NOT_APPLICABLE  # random kernels are rank > 1
    for name in record.predicted_ms:
        assert record.skipped[name].startswith("estimate"), record.skipped


def test_a_column_slow_at_a_smaller_kernel_is_skipped() -> None:
    config = bench.BenchConfig(sizes=(64,), kernels=(5,), repeat=1, methods=("direct", "fft"))
    record = bench.measure_cell(64, 5, config, slow_before={"direct": (3, 9.5)})
    assert "direct" not in record.times_ms
    assert record.skipped["direct"].startswith("took 9.5 s at kernel 3")
    assert record.effective_ms("direct") == math.inf


def test_the_planners_pick_is_timed_as_auto_when_not_among_the_methods() -> None:
    kernel = bench.make_kernel(3, "float32", 0)
    chosen = engine.plan((64, 64), kernel, dtype="float32").strategy
    other = next(m for m in ("direct", "fft") if m != chosen)
    config = bench.BenchConfig(sizes=(64,), kernels=(3,), repeat=1, methods=(other,))
    record = bench.measure_cell(64, 3, config)
    assert set(record.times_ms) == {other, bench.AUTO}
    assert record.regret == pytest.approx(
        record.times_ms[bench.AUTO] / min(record.times_ms.values())
    )


# --- summary ---------------------------------------------------------------------------------


def _record(size, kernel, times, chosen="direct", skipped=None) -> bench.CellRecord:
    record = bench.CellRecord(
        size=size,
        kernel=kernel,
        dtype="float32",
        times_ms=times,
        repeats=dict.fromkeys(times, 1),
        chosen=chosen,
        fastest=None,
        regret=None,
        predicted_ms={},
        error={},
        reference="ndimage-float64",
        skipped=skipped or {},
    )
    record.fastest, record.regret = bench._fastest_and_regret(record, engine.STRATEGIES)
    return record


def test_summary_on_hand_made_records() -> None:
    slow = {"direct": "took 3.0 s at kernel 9 > cap 2 s"}
    records = [
        _record(64, 3, {"direct": 1.0, "fft": 2.0}),
        _record(64, 9, {"direct": 3.0, "fft": 2.0, "overlap-add": 2.5}, chosen="direct"),
        _record(64, 17, {"direct": 9.0, "fft": 1.0}, chosen="fft"),
        _record(128, 3, {"direct": 1.0, "fft": 4.0}),
        _record(128, 9, {"fft": 4.0}, chosen="fft", skipped=slow),
        _record(256, 3, {"direct": 1.0, "overlap-add": 4.0}),
        _record(512, 3, {"fft": 1.0}, chosen="fft", skipped={"direct": bench.NOT_APPLICABLE}),
        # a lone FFT win at 3 (noise) then direct again: the crossover is where FFT stays ahead
        _record(1024, 3, {"direct": 2.0, "fft": 1.0}, chosen="fft"),
        _record(1024, 9, {"direct": 1.0, "fft": 2.0}),
        _record(1024, 17, {"direct": 4.0, "fft": 2.0}, chosen="fft"),
        _record(1024, 33, {"direct": 8.0, "fft": 2.0}, chosen="fft"),
    ]
    summary = bench.summarize(records)
    assert summary.crossover == {64: 9, 128: 9, 256: None, 512: None, 1024: 17}
    assert [r.regret for r in records] == [1.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert summary.planner_accuracy == pytest.approx(10 / 11)
    assert summary.within_15pct == pytest.approx(10 / 11)
    assert summary.mean_regret == pytest.approx(11.5 / 11)
    assert summary.max_regret == 1.5
    assert summary.to_json()["crossover"] == {
        "64": 9,
        "128": 9,
        "256": None,
        "512": None,
        "1024": 17,
    }


def test_summary_crossover_agrees_with_the_records_of_a_real_run() -> None:
    config = bench.BenchConfig(sizes=(32, 128), kernels=(3, 17, 33), repeat=1)
    fractions: list[float] = []
    result = bench.run(config, progress=lambda message, fraction: fractions.append(fraction))
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    for size in config.sizes:
        expected = None
        for record in (r for r in document["records"] if r["size"] == size):
            times = record["times_ms"]
            direct = times.get("direct")
            if direct is None and record["skip_reasons"].get("direct", "not applicable") != (
                "not applicable"
            ):
                direct = math.inf  # skipped as too slow
            ffts = [times[n] for n in ("fft", "overlap-add") if times.get(n) is not None]
            if direct is None or not ffts:
                continue
            if min(ffts) >= direct:
                expected = None  # direct won again: any earlier FFT win was not a crossover
            elif expected is None:
                expected = record["kernel"]
        assert document["summary"]["crossover"][str(size)] == expected
    judged = [r for r in document["records"] if r["regret"] is not None]
    accuracy = sum(r["chosen"] == r["fastest"] for r in judged) / len(judged)
    assert document["summary"]["planner_accuracy"] == pytest.approx(accuracy)
    mean_regret = sum(r["regret"] for r in judged) / len(judged)
    assert document["summary"]["mean_regret"] == pytest.approx(mean_regret)


def test_bad_configuration_is_a_usage_error() -> None:
    for bad in (
        {"methods": ("nope",)},
        {"methods": ()},
        {"compare": ("matlab",)},
        {"dtype": "int8"},
        {"repeat": 0},
        {"mode": "circular"},
    ):
        with pytest.raises(UsageError):
            bench.BenchConfig(**bad)
