"""convfilt.matching against the definitions, written out here as plain float64 loops."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from convfilt import compiled, engine, matching, pools
from convfilt.errors import ConvfiltError, UsageError
from convfilt.matching import (
    _FLAT_FLOOR,
    _FLAT_ULPS,
    Match,
    _denominator,
    _least_denominator,
    _ncc_denominator,
    _ncc_map,
    _Terms,
    _window_energy,
    _WindowEnergy,
    find_matches,
    luminance,
    mask_weights,
    match_template,
    split_alpha,
)
from convfilt.render import display_rgb, draw_matches, heatmap

from .processes import python_script


def direct_scores(
    scene: np.ndarray, probe: np.ndarray, method: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """Every window scored by the textbook formula, channels summed, weights ``mask``."""
    s = np.atleast_3d(np.asarray(scene, dtype=np.float64))
    t = np.atleast_3d(np.asarray(probe, dtype=np.float64))
    h, w = t.shape[:2]
    weights = np.ones((h, w)) if mask is None else np.asarray(mask, dtype=np.float64)
    wc = weights[..., None]
    out = np.empty((s.shape[0] - h + 1, s.shape[1] - w + 1))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            window = s[y : y + h, x : x + w]
            if method == "sqdiff":
                out[y, x] = np.sum(wc * (window - t) ** 2)
            elif method == "ccorr":
                out[y, x] = np.sum(wc * window * t)
            else:  # weighted Pearson correlation over all channels
                t_dev = t - np.sum(wc * t, axis=(0, 1)) / weights.sum()
                s_dev = window - np.sum(wc * window, axis=(0, 1)) / weights.sum()
                den = np.sqrt(np.sum(wc * t_dev**2)) * np.sqrt(np.sum(wc * s_dev**2))
                out[y, x] = 0.0 if den == 0 else np.sum(wc * t_dev * s_dev) / den
    return out


def window_energies(
    scene: np.ndarray, probe_shape: tuple[int, ...], mask: np.ndarray | None
) -> np.ndarray:
    """Each window's weighted sum of squared deviations from its weighted mean, all channels."""
    scene = np.asarray(scene, dtype=np.float64)
    s = np.atleast_3d(scene)
    h, w = probe_shape[:2]
    weights = (np.ones((h, w)) if mask is None else mask)[..., None]
    out = np.empty((s.shape[0] - h + 1, s.shape[1] - w + 1))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            window = s[y : y + h, x : x + w]
            mean = np.sum(weights * window, axis=(0, 1)) / weights.sum()
            out[y, x] = np.sum(weights * (window - mean) ** 2)
    return out


def textured(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth-ish random texture in [0, 1] (so neighbouring windows differ gently)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    return (noise + np.roll(noise, 1, axis=0) + np.roll(noise, 1, axis=1)) / 3.0


def best(scores: np.ndarray, probe_shape: tuple[int, ...], method: str = "ncc") -> Match:
    return find_matches(scores, probe_shape=probe_shape, method=method)[0]


# ------------------------------------------------------------------------------------------
# against the definition


@st.composite
def scene_probe_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    channels = draw(st.sampled_from([None, 1, 3]))
    height, width = draw(st.integers(2, 10)), draw(st.integers(2, 10))
    probe_h, probe_w = draw(st.integers(1, height)), draw(st.integers(1, width))
    tail = () if channels is None else (channels,)
    # small integer levels make flat windows and ties likely; floats exercise the rest
    elements = draw(
        st.sampled_from(
            [
                st.integers(0, 3).map(float),
                st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64),
            ]
        )
    )
    scene = draw(hnp.arrays(np.float64, (height, width, *tail), elements=elements))
    probe = draw(hnp.arrays(np.float64, (probe_h, probe_w, *tail), elements=elements))
    mask = draw(
        st.none()
        | hnp.arrays(np.float64, (probe_h, probe_w), elements=st.sampled_from([0.0, 0.5, 1.0]))
    )
    if mask is not None and not mask.any():
        mask[0, 0] = 1.0
    return scene, probe, mask


@pytest.mark.parametrize("method", ["ncc", "sqdiff", "ccorr"])
@settings(max_examples=60, deadline=None)
@given(case=scene_probe_mask())
def test_agrees_with_direct_formula(
    method: str, case: tuple[np.ndarray, np.ndarray, np.ndarray | None]
) -> None:
    scene, probe, mask = case
    got = match_template(scene, probe, method=method, mask=mask)
    want = direct_scores(scene, probe, method, mask)
    assert got.dtype == np.float64
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    if method == "ncc":
        # Flat windows score 0; "flat" is decided with a tolerance relative to the scene's
        # range, so windows barely above zero variance may go either way: check the rest.
        weights = np.ones(probe.shape[:2]) if mask is None else mask
        energy = window_energies(scene, probe.shape, mask)
        deviations = np.atleast_3d(scene) - np.atleast_3d(scene).mean(axis=(0, 1))
        scale = weights.sum() * np.sum(deviations**2, axis=-1).max()
        probe_energy = window_energies(probe, probe.shape, mask)[0, 0]
        probe_scale = weights.sum() * np.sum(np.atleast_3d(probe) ** 2, axis=-1).max()
        clear = (energy > 1e-8 * scale) & (probe_energy > 1e-8 * probe_scale)
        np.testing.assert_allclose(got[clear], want[clear], atol=1e-6)
        assert (got[energy == 0] == 0).all()
        assert (np.abs(got) <= 1).all()
    else:
        scale = np.sum(np.abs(scene)) * max(np.abs(probe).max(), 1.0) + np.sum(probe**2) + 1.0
        np.testing.assert_allclose(got, want, atol=1e-9 * scale)


def test_direct_and_fft_strategies_agree() -> None:
    scene, probe = textured((40, 50, 3), 1), textured((7, 6, 3), 2)
    mask = (np.arange(42).reshape(7, 6) % 3 != 0).astype(float)
    for weights in (None, mask):
        via_fft = match_template(scene, probe, mask=weights, strategy="fft")
        direct = match_template(scene, probe, mask=weights, strategy="direct")
        np.testing.assert_allclose(via_fft, direct, atol=1e-10)
        np.testing.assert_allclose(direct, direct_scores(scene, probe, "ncc", weights), atol=1e-9)


# ------------------------------------------------------------------------------------------
# exact crops and robustness


@pytest.mark.parametrize(
    "scene",
    [
        pytest.param(np.rint(textured((60, 70, 3)) * 255).astype(np.uint8), id="colour-uint8"),
        pytest.param(np.rint(textured((60, 70)) * 255).astype(np.uint8), id="grey-uint8"),
        pytest.param(np.rint(textured((60, 70)) * 65535).astype(np.uint16), id="grey-uint16"),
        pytest.param(textured((60, 70, 3)).astype(np.float32), id="colour-float32"),
        pytest.param(textured((60, 70)) * 1e-3 - 5.0, id="grey-float64-negative"),
    ],
)
def test_exact_crop_scores_one_at_its_place(scene: np.ndarray) -> None:
    probe = scene[21:37, 30:52]
    scores = match_template(scene, probe)
    assert scores.shape == (60 - 16 + 1, 70 - 22 + 1)
    found = best(scores, probe.shape)
    assert (found.x, found.y, found.width, found.height) == (30, 21, 22, 16)
    assert found.score == pytest.approx(1.0, abs=1e-9)
    assert abs(found.x_subpixel - 30) < 0.5 and abs(found.y_subpixel - 21) < 0.5


@pytest.mark.parametrize(("shape", "copy_row"), [((300, 280), 100), ((700, 520), 600)])
def test_float32_scores_agree_with_float64_and_peaks_are_exact(
    shape: tuple[int, int], copy_row: int
) -> None:
    """float32 inputs take the float32 cross term: the whole map stays within 1e-5 of the
    float64 one, and the best placements are recomputed in float64 (an exact crop scores 1).
    The larger scene's map is scored in several bands, its two copies in different ones."""
    scene = textured(shape, 4).astype(np.float32)
    scene[copy_row : copy_row + 40, 50:90] = scene[10:50, 200:240]  # a second exact copy
    probe = scene[10:50, 200:240]
    plans: list[engine.Plan] = []
    fast = match_template(scene, probe, on_plan=plans.append)
    assert fast.dtype == np.float64 and plans[0].dtype == "float32"
    exact = match_template(scene.astype(np.float64), probe.astype(np.float64))
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-5)
    top = find_matches(fast, probe_shape=probe.shape, top=2)
    assert {(m.x, m.y) for m in top} == {(200, 10), (50, copy_row)}
    for match in top:
        assert match.score == pytest.approx(1.0, abs=1e-12)
        assert match.score == pytest.approx(exact[match.y, match.x], abs=1e-12)


def test_sqdiff_and_ccorr_find_exact_crop() -> None:
    scene = textured((50, 60, 3), 3)
    probe = scene[10:22, 33:41]
    sq = match_template(scene, probe, method="sqdiff")
    found = best(sq, probe.shape, "sqdiff")
    assert (found.x, found.y) == (33, 10)
    assert found.score == pytest.approx(0.0, abs=1e-9)
    assert sq.min() >= 0.0
    ccorr = match_template(scene, probe, method="ccorr")
    np.testing.assert_allclose(ccorr[10, 33], np.sum(probe * probe))


def test_gain_and_offset_keep_location_and_score() -> None:
    scene = textured((64, 64), 4)
    probe = scene[5:21, 40:60]
    for gain, offset in [(2.5, 40.0), (0.01, -3.0), (-1.0, 0.0)]:
        scores = match_template(scene * gain + offset, probe)
        found = best(scores, probe.shape)
        if gain > 0:
            assert (found.x, found.y) == (40, 5)
            assert found.score == pytest.approx(1.0, abs=1e-9)
        else:  # an inverted scene anti-correlates exactly at the crop
            assert scores[5, 40] == pytest.approx(-1.0, abs=1e-9)


def test_noise_keeps_location() -> None:
    rng = np.random.default_rng(5)
    scene = textured((80, 90, 3), 5)
    probe = scene[30:50, 10:40].copy()
    noisy = scene + rng.normal(0.0, 0.05, scene.shape)
    found = best(match_template(noisy, probe), probe.shape)
    assert (found.x, found.y) == (10, 30)
    assert 0.8 < found.score < 1.0


def test_flat_scene_scores_zero_never_nan() -> None:
    scene = np.full((30, 40), 200, dtype=np.uint8)
    probe = textured((5, 6), 6)
    for mask in (None, (textured((5, 6), 7) > 0.5).astype(float)):
        scores = match_template(scene, probe, mask=mask)
        assert np.isfinite(scores).all()
        assert (scores == 0.0).all()


def test_flat_probe_scores_zero() -> None:
    scores = match_template(textured((20, 20), 8), np.full((4, 4), 0.3))
    assert (scores == 0.0).all()


def test_flat_patch_in_textured_scene_scores_zero() -> None:
    scene = textured((300, 300), 9) * 60000.0
    scene[100:200, 100:200] = 31234.567
    probe = textured((16, 16), 10)
    scores = match_template(scene, probe)
    assert (scores[100 : 200 - 16, 100 : 200 - 16] == 0.0).all()
    assert np.abs(scores[:50, :50]).max() > 0.1


def test_pedestal_16_bit() -> None:
    rng = np.random.default_rng(11)
    scene = (60000 + rng.integers(0, 4, (120, 150))).astype(np.uint16)
    probe = scene[40:72, 90:130]
    scores = match_template(scene, probe)
    found = best(scores, probe.shape)
    assert (found.x, found.y) == (90, 40)
    assert found.score == pytest.approx(1.0, abs=1e-9)
    assert np.abs(scores).max() <= 1.0
    # the same data without the pedestal scores the same everywhere
    np.testing.assert_allclose(scores, match_template(scene - 60000, probe - 60000), atol=1e-9)


def test_several_pasted_copies_with_top_and_suppression() -> None:
    rng = np.random.default_rng(12)
    scene = rng.random((120, 160)) * 0.2
    probe = textured((12, 14), 13)
    places = [(5, 10), (60, 20), (100, 90)]  # (x, y)
    for x, y in places:
        scene[y : y + 12, x : x + 14] = probe
    scores = match_template(scene, probe)
    found = find_matches(scores, probe_shape=probe.shape, top=3)
    assert sorted((m.x, m.y) for m in found) == sorted(places)
    assert all(m.score == pytest.approx(1.0, abs=1e-9) for m in found)
    more = find_matches(scores, probe_shape=probe.shape, top=10)
    assert len(more) == 10
    assert [m.score for m in more] == sorted((m.score for m in more), reverse=True)
    for i, a in enumerate(more):  # suppression: no two within half the probe size on both axes
        for b in more[i + 1 :]:
            assert abs(a.x - b.x) >= 7 or abs(a.y - b.y) >= 6
    above = find_matches(scores, probe_shape=probe.shape, top=10, min_score=0.99)
    assert len(above) == 3


def test_masked_probe_found_on_different_background() -> None:
    rng = np.random.default_rng(14)
    size = 21
    yy, xx = np.mgrid[:size, :size] - size // 2
    disc = (xx**2 + yy**2 <= 8**2).astype(float)
    obj = textured((size, size, 3), 15)
    probe = obj * disc[..., None] + (1 - disc[..., None]) * np.array([0.0, 1.0, 0.0])
    scene = rng.random((90, 110, 3))  # a busy background unlike the probe's green one
    x0, y0 = 47, 31
    window = scene[y0 : y0 + size, x0 : x0 + size]
    window[disc > 0] = obj[disc > 0]
    masked = match_template(scene, probe, mask=disc)
    found = best(masked, probe.shape)
    assert (found.x, found.y) == (x0, y0)
    assert found.score == pytest.approx(1.0, abs=1e-9)
    plain = match_template(scene, probe)
    assert plain[y0, x0] < 0.9  # the background spoils the unmasked score
    bools = match_template(scene, probe, mask=disc > 0)
    np.testing.assert_allclose(bools, masked)


def test_all_ones_mask_equals_no_mask() -> None:
    scene, probe = textured((30, 30, 3), 16), textured((6, 5, 3), 17)
    np.testing.assert_allclose(
        match_template(scene, probe, mask=np.ones((6, 5), bool)), match_template(scene, probe)
    )


def test_on_plan_sees_the_engine_plans() -> None:
    plans: list[engine.Plan] = []
    match_template(textured((40, 40, 3), 18), textured((8, 8, 3), 19), on_plan=plans.append)
    assert len(plans) == 3  # one cross-term correlation per channel
    assert all(isinstance(p, engine.Plan) for p in plans)
    assert all(p.kernel_shape == (8, 8) and p.image_shape == (40, 40) for p in plans)


@pytest.mark.parametrize("mask", [None, "disc"])
def test_an_outlier_far_away_leaves_the_pedestal_match_and_flat_windows_alone(
    mask: str | None,
) -> None:
    """Flatness is decided per window: one dead and one hot pixel elsewhere change nothing."""
    rng = np.random.default_rng(11)
    scene = (60000 + rng.integers(0, 2, (120, 150))).astype(np.uint16)
    scene[80:120, 0:60] = 61234  # a flat patch, below the hot pixel's column
    probe = scene[40:72, 90:130].copy()
    weights = None
    if mask == "disc":
        yy, xx = np.mgrid[:32, :40]
        weights = ((yy - 16) ** 2 + (xx - 20) ** 2 <= 15**2).astype(float)
    clean = match_template(scene, probe, mask=weights)
    scene[5, 5] = 0  # dead
    scene[60, 10] = 65535  # hot, in the columns above the flat patch
    scores = match_template(scene, probe, mask=weights)
    found = best(scores, probe.shape)
    assert (found.x, found.y) == (90, 40)
    assert found.score == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(scores).all()
    assert (scores[80 : 120 - 32 + 1, 0 : 60 - 40 + 1] == 0.0).all()  # flat: exactly 0
    far = np.ones(scores.shape, bool)  # windows that hold neither outlier score as before
    far[: 5 + 1, : 5 + 1] = far[60 - 31 : 61, : 10 + 1] = False
    np.testing.assert_allclose(scores[far], clean[far], atol=1e-9)


def test_float32_best_match_is_rechecked_in_low_contrast() -> None:
    """A texture of amplitude 2e-5 (and a bright block that sets the float32 rounding): the
    float32 cross term is off by ~0.1 there, yet the best placement and its score are the
    float64 ones."""
    rng = np.random.default_rng(0)
    scene = (0.5 + 2e-5 * rng.random((160, 160))).astype(np.float32)
    scene[:4, :4] = 20.0
    probe = rng.random((32, 32)).astype(np.float32)  # not in the scene
    exact = direct_scores_vectorised(scene, probe)
    fast = match_template(scene, probe)
    found, want = best(fast, probe.shape), best(exact, probe.shape)
    assert (found.x, found.y) == (want.x, want.y)
    assert found.score == pytest.approx(want.score, abs=1e-9)


def direct_scores_vectorised(scene: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """ncc of a grey scene by its definition, in float64 (windows as a strided view)."""
    t = probe.astype(np.float64) - probe.astype(np.float64).mean()
    windows = np.lib.stride_tricks.sliding_window_view(scene.astype(np.float64), probe.shape)
    deviations = windows - windows.mean(axis=(2, 3), keepdims=True)
    numerator = np.einsum("yxij,ij->yx", deviations, t)
    return numerator / np.sqrt((deviations**2).sum(axis=(2, 3)) * (t**2).sum())


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    band=st.sampled_from([1, 5, 2**17]),
)
def test_ncc_map_candidates_are_every_window_that_can_be_best(
    data: st.DataObject, shape: tuple[int, int], band: int
) -> None:
    """Band by band (tiny bands cross many edges), the scores are cross / sqrt(E·Ep) clipped,
    flat windows exactly 0; and the candidates hold every window whose score plus its error
    bound reaches the largest score less its bound (the definition, over the whole map)."""
    cross = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-4, 4, width=32)))
    energy = data.draw(
        hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1e-12, 1e-6, 0.5, 2, 9]))
    )
    bound = data.draw(st.sampled_from([1e-9, 1e-5, 1e-2]))
    terms = _Terms(cross=cross, energy=energy, probe_energy=2.0, probe_dot_mean=0.0, weight=1.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "_SCORE_BAND", band)
        scores, candidates = _ncc_map(terms, cross_error=bound)
    flat = energy == 0.0
    denominator = np.sqrt(np.where(flat, 1.0, energy * 2.0))
    want = np.clip(np.where(flat, 0.0, cross / denominator), -1.0, 1.0)
    np.testing.assert_allclose(scores, want, rtol=1e-15, atol=0)
    assert not np.signbit(scores[flat]).any()
    error = np.where(flat, 0.0, bound / denominator)
    must = np.flatnonzero(want + error >= np.max(want - error))
    assert set(must) <= set(candidates.tolist())
    assert len(set(candidates.tolist())) == len(candidates)


@pytest.fixture(params=["numpy", "compiled"])
def energy_road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Window energies by the numpy loops or by the compiled kernel (the rental's choice
    fixed either way): every energy test holds for both."""
    road = str(request.param)
    monkeypatch.setattr(engine, "rent_compiled_kernel", lambda *args: road == "compiled")
    return road


def test_window_energy_shared_by_threads_equals_one_thread(energy_road: str) -> None:
    """A pool worker and the caller share the bands: the result is the one-thread result,
    whoever computed which band (the worker is let take the first ones)."""
    rng = np.random.default_rng(5)
    plane = rng.random((700, 300)).astype(np.float32)
    alone = _window_energy(plane, 0.5, 9, 7, own_mean=True)
    job = _WindowEnergy(plane, 0.5, 9, 7, own_mean=True)
    takers: list[str] = []
    worker_started = threading.Event()
    take = job._next_band

    def spy() -> int | None:
        takers.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            worker_started.set()
        return take()

    job._next_band = spy  # type: ignore[method-assign]
    side = pools.SideWork(job.work, matching._pool)
    side.start()
    assert worker_started.wait(timeout=10)
    np.testing.assert_array_equal(job.result(side), alone)
    assert any(name != threading.main_thread().name for name in takers)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 700),
    dtype=st.sampled_from([np.float32, np.float64]),
    listed=st.booleans(),
    nan=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_both_score_roads_give_the_same_bits(
    rows: int,
    cols: int,
    dtype: type,
    listed: bool,
    nan: bool,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled score pass and the numpy bands give the same map, and the same candidates
    for the float64 re-check: flat windows (0, not -0; an energy at the flat floor too),
    scores rounded past +-1 (clipped), negative zeros, an overflowing denominator, NaN
    energies beside flat ones; bands of one row to several hundred."""
    rng = np.random.default_rng(seed)
    energy = rng.random((rows, cols)) * 10.0 ** rng.integers(-3, 4, (rows, cols))
    energy[rng.random((rows, cols)) < 0.05] = 0.0  # flat
    energy[rng.random((rows, cols)) < 0.01] = _FLAT_FLOOR  # flat, just
    energy[rng.random((rows, cols)) < 0.01] = np.nextafter(_FLAT_FLOOR, 1.0)  # not flat
    probe_energy = float(rng.random() * 50 + 1e-3)
    bound = np.sqrt(energy) * np.sqrt(probe_energy)
    cross = bound * rng.uniform(-1.0, 1.0, (rows, cols))
    edge = rng.random((rows, cols)) < 0.05
    cross[edge] = bound[edge] * rng.choice([-1.0, 1.0], int(edge.sum())) * (1 + 1e-15)
    cross[rng.random((rows, cols)) < 0.02] = -0.0
    energy.flat[0] = 1e300  # sqrt(E)·sqrt(Ep) still finite; its score 0 or -0
    if nan:
        energy[rng.random((rows, cols)) < 0.02] = np.nan
    terms = _Terms(
        cross=cross.astype(dtype),
        energy=energy,
        probe_energy=probe_energy,
        probe_dot_mean=0.0,
        weight=float(rows * cols),
        scene_means=(0.0,),
        probe_offsets=(0.0,),
        cross_error=0.0,
    )
    error = 1e-6 if listed else None
    maps = {}
    for road in (False, True):
        monkeypatch.setattr(engine, "rent_compiled_kernel", lambda *args, road=road: road)
        maps[road] = _ncc_map(terms, cross_error=error)
    np.testing.assert_array_equal(maps[True][0], maps[False][0])
    assert np.signbit(maps[True][0]).tolist() == np.signbit(maps[False][0]).tolist()
    np.testing.assert_array_equal(maps[True][1], maps[False][1])
    assert (maps[True][0][energy <= _FLAT_FLOOR] == 0.0).all()
    assert np.isnan(maps[True][0][np.isnan(energy)]).all()
    assert not np.nanmax(np.abs(maps[True][0]), initial=0.0) > 1.0
    # the bands' error facts come from the energies: the same as from the denominators
    root = float(np.sqrt(probe_energy))
    denominator, _ = _ncc_denominator(energy, root)
    np.testing.assert_equal(_least_denominator(energy, root), np.min(denominator))
    for i in rng.integers(0, energy.size, 20):
        np.testing.assert_equal(_denominator(float(energy.flat[i]), root), denominator.flat[i])


def test_matching_hands_the_energies_core_back_to_the_transforms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transforms are capped to the cores the window energies leave free only until the
    energies are done (``until``), then may use every core."""
    from convfilt import cost

    caps: list[tuple[int, object]] = []
    cap_transforms = cost.transform_threads

    def spy(cap: int, until: object = None) -> object:
        caps.append((cap, until))
        return cap_transforms(cap, until)  # type: ignore[arg-type]

    monkeypatch.setattr(cost, "transform_threads", spy)
    scene = np.random.default_rng(7).random((300, 280)).astype(np.float32)
    match_template(scene, scene[40:90, 60:120].copy())
    handed_back = [(cap, until) for cap, until in caps if until is not None]
    assert [cap for cap, _ in handed_back] == [cost.available_cores() - 1]  # one channel
    until = handed_back[0][1]
    assert callable(until) and until()  # the energies are done once the call returns


def test_matching_leaves_no_window_energies_to_the_garbage_collector() -> None:
    """The window-energy job and its side work form no reference cycle: the job (and the
    float64 map it holds, 33 MB for a 2048² scene) is freed as the call returns, not
    whenever the collector next runs."""
    import gc

    rng = np.random.default_rng(6)
    scene = rng.random((300, 280)).astype(np.float32)
    gc.collect()
    gc.disable()
    try:
        match_template(scene, scene[40:90, 60:120].copy())
        left = [o for o in gc.get_objects() if isinstance(o, (_WindowEnergy, pools.SideWork))]
    finally:
        gc.enable()
    assert left == []


def test_float32_cross_term_near_overflow_is_computed_in_float64() -> None:
    """A float32 scene at 1e20: its cross term would overflow float32, so the map comes from
    float64 throughout, finite, with the exact crop at 1."""
    rng = np.random.default_rng(8)
    scene = (rng.random((90, 80)) * 1e20).astype(np.float32)
    probe = scene[30:46, 20:40].copy()
    scores = match_template(scene, probe)
    assert np.isfinite(scores).all()
    assert scores[30, 20] == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(scores), scores.shape) == (30, 20)


def test_tiny_values_do_not_underflow_the_denominator() -> None:
    """Values near 1e-100 (float64): E·Ep would underflow to 0, sqrt(E)·sqrt(Ep) does not.
    NCC ignores scale, so the reference is the same scene at 1."""
    rng = np.random.default_rng(9)
    unit = rng.random((40, 40))
    scene = unit * 1e-100
    probe = scene[5:15, 7:17].copy()
    want = direct_scores_vectorised(unit, unit[5:15, 7:17])
    np.testing.assert_allclose(match_template(scene, probe), want, atol=1e-9)


def test_match_template_after_fork() -> None:
    """A child forked after a match starts threads of its own instead of waiting forever on
    the parent's pool (a real process; the child is killed after 60 s if it hangs)."""
    script = """
import os, signal, numpy as np
from convfilt.matching import match_template
scene = np.random.default_rng(0).random((600, 600)).astype(np.float32)
probe = scene[100:132, 200:232].copy()
match_template(scene, probe)
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    scores = match_template(scene, probe)
    os._exit(0 if abs(scores[100, 200] - 1.0) < 1e-9 else 3)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    assert python_script(script).stdout.split() == ["0"]


def energies_by_definition(plane: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Per window of ``d = plane - plane.mean()``: sum(d²), the two-pass energy about the
    window's mean, and whether the window is exactly flat (all its values equal)."""
    windows = np.lib.stride_tricks.sliding_window_view(plane - plane.mean(), shape)
    raw = (windows**2).sum(axis=(2, 3))
    energy = ((windows - windows.mean(axis=(2, 3), keepdims=True)) ** 2).sum(axis=(2, 3))
    flat = (windows == windows[..., :1, :1]).all(axis=(2, 3))
    return raw, energy, flat


@st.composite
def planes_with_outliers(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Textures of very different contrasts on a pedestal or not, a flat patch, outliers."""
    rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    height, width = draw(st.integers(1, rows)), draw(st.integers(1, cols))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    amplitude = draw(st.sampled_from([1.0, 1e-3, 1e-7]))
    levels = draw(st.sampled_from([None, 3]))  # few levels: flat windows by chance
    texture = rng.random((rows, cols)) if levels is None else rng.integers(0, levels, (rows, cols))
    plane = draw(st.sampled_from([0.0, 60000.0])) + amplitude * texture
    top, left = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
    bottom, right = draw(st.integers(top, rows)), draw(st.integers(left, cols))
    plane[top:bottom, left:right] = draw(st.sampled_from([0.5, 31234.567]))
    for _ in range(draw(st.integers(0, 3))):
        y, x = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        plane[y, x] = draw(st.sampled_from([0.0, 65535.0, -1e5]))
    return plane, height, width


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=planes_with_outliers())
def test_window_energy_agrees_with_the_definition(
    case: tuple[np.ndarray, int, int], energy_road: str
) -> None:
    """Every window's energy is within its own rounding bound of the two-pass float64 value,
    or 0 if its true energy is within twice that bound (no textured window is zeroed), and
    exactly flat windows are exactly 0."""
    plane, height, width = case
    raw, energy, flat = energies_by_definition(plane, (height, width))
    limit = _FLAT_ULPS * height * width * np.finfo(np.float64).eps * raw
    centred = _window_energy(plane, float(plane.mean()), height, width, own_mean=True)
    assert (centred[flat] == 0.0).all()
    zeroed = centred == 0.0  # the rest is within the rounding bound; only near-flat zeroed
    assert (np.abs(centred - energy)[~zeroed] <= limit[~zeroed]).all()
    assert (energy[zeroed] <= 2.0 * limit[zeroed]).all()
    sums = _window_energy(plane, float(plane.mean()), height, width, own_mean=False)
    assert (np.abs(sums - raw) <= limit).all()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 160),
    cols=st.integers(1, 90),
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    own_mean=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_both_energy_roads_give_the_same_bits(
    rows: int,
    cols: int,
    data: st.DataObject,
    dtype: type,
    own_mean: bool,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled kernel and the numpy loops add the same values in the same order (bands
    of whole blocks, doubling along the rows): the road taken changes no bit."""
    height, width = data.draw(st.integers(1, rows)), data.draw(st.integers(1, cols))
    rng = np.random.default_rng(seed)
    plane: np.ndarray = (60000.0 * rng.integers(0, 2) + rng.random((rows, cols)) ** 3).astype(dtype)
    centre = float(plane.mean())
    energies: dict[bool, np.ndarray] = {}
    for road in (False, True):
        monkeypatch.setattr(engine, "rent_compiled_kernel", lambda *args, road=road: road)
        energies[road] = _window_energy(plane, centre, height, width, own_mean=own_mean)
    np.testing.assert_array_equal(energies[True], energies[False])


@pytest.mark.parametrize(("height", "width"), [(7, 5), (1, 9), (33, 2)])
def test_window_energy_across_bands_and_partial_blocks(
    height: int, width: int, energy_road: str
) -> None:
    """A wide scene is summed in several bands of rows, each cut into blocks of the window's
    height with a partial one last; on a pedestal with outliers each window still agrees."""
    rng = np.random.default_rng(21)
    plane = 60000.0 + rng.random((120, 1100))
    plane[30:90, 200:700] = 60000.5
    plane[50, 100] = plane[10, 1000] = 65535.0
    raw, energy, flat = energies_by_definition(plane, (height, width))
    limit = _FLAT_ULPS * height * width * np.finfo(np.float64).eps * raw
    centred = _window_energy(plane, float(plane.mean()), height, width, own_mean=True)
    assert flat.any() and (centred[flat] == 0.0).all()
    assert (np.abs(centred - energy)[~flat] <= limit[~flat]).all()


def test_flat_windows_beside_a_hot_pixel_are_exactly_zero(energy_road: str) -> None:
    """Flatness is judged against each window's own values: windows of a flat patch beside a
    hot and a dead pixel are exactly 0, and a faint texture (variance 1e-8, far below the
    hot pixel's rounding) right next to them keeps its energy."""
    rng = np.random.default_rng(20)
    plane = 60000.0 + 1e-4 * rng.random((64, 64))
    plane[16:40, 8:30] = 60000.25
    plane[20, 30] = 65535.0  # hot, next to the patch in its rows
    plane[40, 12] = 0.0  # dead, right below it
    raw, energy, flat = energies_by_definition(plane, (8, 8))
    centred = _window_energy(plane, float(plane.mean()), 8, 8, own_mean=True)
    assert flat[16:33, 8:23].all()
    assert (centred[flat] == 0.0).all()
    outliers = np.zeros(plane.shape, bool)
    outliers[20, 30] = outliers[40, 12] = True
    clean = ~np.lib.stride_tricks.sliding_window_view(outliers, (8, 8)).any(axis=(2, 3))
    textured_clean = clean & ~flat
    assert (centred[textured_clean] > 0.0).all()
    limit = _FLAT_ULPS * 64 * np.finfo(np.float64).eps * raw  # 2e-12 at most, energies 5e-8
    assert (np.abs(centred - energy)[clean] <= limit[clean]).all()


# ------------------------------------------------------------------------------------------
# peaks


def test_subpixel_from_parabola() -> None:
    yy, xx = np.mgrid[:20, :30]
    scores = -((xx - 12.3) ** 2) - 2.0 * (yy - 7.8) ** 2
    found = best(scores, (5, 5))
    assert (found.x, found.y) == (12, 8)
    assert found.x_subpixel == pytest.approx(12.3)
    assert found.y_subpixel == pytest.approx(7.8)


def test_subpixel_clamped_and_none_at_border() -> None:
    scores = np.zeros((5, 6))
    scores[2, 0] = 1.0  # peak on the left border: x keeps the integer position
    scores[1, 0] = 0.99  # almost as high above: y offset would be near -0.5, clamped
    found = best(scores, (3, 3))
    assert (found.x, found.y) == (0, 2)
    assert found.x_subpixel == 0.0
    assert 1.5 <= found.y_subpixel < 2.0


def test_lower_is_better_for_sqdiff() -> None:
    scores = np.full((10, 10), 5.0)
    scores[3, 4] = 1.0
    scores[8, 8] = 0.5
    found = find_matches(scores, probe_shape=(2, 2), method="sqdiff", top=2, min_score=2.0)
    assert [(m.x, m.y, m.score) for m in found] == [(8, 8, 0.5), (4, 3, 1.0)]
    assert find_matches(scores, probe_shape=(2, 2), method="sqdiff", min_score=0.1) == []


def test_min_distance_one_keeps_neighbouring_peaks() -> None:
    scores = np.zeros((10, 10))
    scores[4, 4], scores[4, 6] = 1.0, 0.9
    near = find_matches(scores, probe_shape=(8, 8), top=2, min_distance=1)
    assert [(m.x, m.y) for m in near] == [(4, 4), (6, 4)]
    default = find_matches(scores, probe_shape=(8, 8), top=2)
    assert (default[0].x, default[0].y) == (4, 4)
    assert (6, 4) not in [(m.x, m.y) for m in default]


@pytest.mark.parametrize(("size", "reach"), [(5, 3), (6, 3), (7, 4), (8, 4)])
def test_default_suppression_is_half_the_probe_rounded_up(size: int, reach: int) -> None:
    scores = np.zeros((30, 30))
    scores[10, 10] = 1.0
    scores[10, 10 + reach] = 0.8  # just far enough along x: kept
    scores[10 + reach - 1, 10] = 0.9  # just too close along y (and x): suppressed
    found = [
        (m.x, m.y) for m in find_matches(scores, probe_shape=(size, size), top=3, min_score=0.5)
    ]
    assert found == [(10, 10), (10 + reach, 10)]


def test_shoulders_are_not_peaks() -> None:
    xx = np.arange(40)
    scores = np.exp(-((xx - 20.0) ** 2) / 200.0)[np.newaxis, :]  # one wide peak
    found = find_matches(scores, probe_shape=(2, 2), top=5)
    assert [m.x for m in found] == [20]


def test_find_matches_rejects_bad_options() -> None:
    scores = np.zeros((4, 4))
    with pytest.raises(UsageError, match=r"^top "):
        find_matches(scores, probe_shape=(2, 2), top=0)
    with pytest.raises(UsageError, match=r"^min_distance "):
        find_matches(scores, probe_shape=(2, 2), min_distance=0)
    with pytest.raises(UsageError, match="2-D"):
        find_matches(np.zeros(4), probe_shape=(2, 2))
    with pytest.raises(UsageError, match="unknown match method"):
        find_matches(scores, probe_shape=(2, 2), method="tm_ccoeff")


# ------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    ("scene", "probe", "options", "error", "message"),
    [
        (np.zeros((5, 5)), np.zeros((6, 2)), {}, UsageError, "larger than the scene"),
        (np.zeros((5, 5)), np.zeros((2, 6)), {}, UsageError, "larger than the scene"),
        (np.zeros((5, 5, 3)), np.zeros((2, 2)), {}, UsageError, "channel"),
        (np.zeros((5, 5, 3)), np.zeros((2, 2, 4)), {}, UsageError, "channel"),
        (np.zeros(5), np.zeros(2), {}, UsageError, "scene must be"),
        (np.zeros((5, 5)), np.zeros((0, 2)), {}, UsageError, "probe must be"),
        (np.zeros((5, 5), complex), np.zeros((2, 2)), {}, UsageError, "real numbers"),
        (np.full((5, 5), np.nan), np.zeros((2, 2)), {}, ConvfiltError, "NaN or masked"),
        (np.zeros((5, 5)), np.full((2, 2), np.inf), {}, ConvfiltError, "NaN"),
        (np.zeros((5, 5)), np.zeros((2, 2)), {"method": "bogus"}, UsageError, "unknown"),
        (np.zeros((5, 5)), np.zeros((2, 2)), {"mask": np.ones((3, 2))}, UsageError, "fit"),
        (np.zeros((5, 5)), np.zeros((2, 2)), {"mask": np.zeros((2, 2))}, ConvfiltError, "every"),
        (np.zeros((5, 5)), np.zeros((2, 2)), {"mask": -np.ones((2, 2))}, UsageError, "negative"),
        (
            np.zeros((5, 5)),
            np.zeros((2, 2)),
            {"mask": np.full((2, 2), np.nan)},
            UsageError,
            "finite",
        ),
    ],
)
def test_bad_inputs(
    scene: np.ndarray,
    probe: np.ndarray,
    options: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        match_template(scene, probe, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# picture helpers used by the command line


def test_split_alpha_and_mask_weights() -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    colour, alpha = split_alpha(rgba, True)
    assert colour.shape == (4, 5, 3)
    assert alpha is not None and alpha[0, 0] == 0.0 and alpha[1, 1] == 1.0
    grey_alpha = np.zeros((4, 5, 2), np.uint16)
    grey, _ = split_alpha(grey_alpha, True)
    assert grey.shape == (4, 5)
    assert split_alpha(rgba, False)[1] is None
    np.testing.assert_allclose(
        mask_weights(np.array([[0, 65535]], np.uint16), False, name="m"), [[0.0, 1.0]]
    )
    with pytest.raises(UsageError, match=r"^mask m"):
        mask_weights(np.zeros((2, 2, 3), np.uint8), False, name="m")


def test_luminance_is_rec601_like_pillow() -> None:
    rgb = np.rint(textured((16, 16, 3), 20) * 255).astype(np.uint8)
    pillow = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)
    assert np.abs(luminance(rgb) - pillow).max() <= 1.0
    grey = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(luminance(grey), grey)


def test_heatmap_puts_best_score_at_window_centre() -> None:
    scene_shape, probe_shape = (40, 50, 3), (9, 10, 3)
    scores = np.zeros((40 - 9 + 1, 50 - 10 + 1))
    scores[7, 11] = 1.0
    image = heatmap(scores, scene_shape=scene_shape, probe_shape=probe_shape, method="ncc")
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8
    brightness = image.astype(int).sum(axis=2)
    assert np.unravel_index(np.argmax(brightness), brightness.shape) == (7 + 4, 11 + 5)
    assert (image[:4] == 0).all()  # no window is centred there
    low = heatmap(-scores, scene_shape=scene_shape, probe_shape=probe_shape, method="sqdiff")
    np.testing.assert_array_equal(low, image)  # lower-is-better drawn the same way up


def test_display_and_draw_matches() -> None:
    deep = (textured((30, 40), 21) * 65535).astype(np.uint16)
    rgb = display_rgb(deep, False)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[..., 0], deep / 257.0, atol=0.51)
    drawn = draw_matches(rgb, [Match(5, 6, 10, 8, 0.5, 5.0, 6.0)])
    assert drawn.shape == rgb.shape
    assert tuple(drawn[6, 5]) == (255, 0, 0)  # the box's corner, best match in red
    assert (drawn[8:12, 8:12] == rgb[8:12, 8:12]).all()  # inside the box untouched


def test_the_window_energies_go_compiled_once_the_rental_pays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each match offers its window energies' saving toward the compiled road's one-time cost
    (the roads' account); once the account reaches it the energies run compiled, with the
    same scores."""
    monkeypatch.setattr(engine, "_forgone", [0.0])
    monkeypatch.setattr(compiled, "_loaded", set())
    rng = np.random.default_rng(8)
    scene, probe = rng.random((90, 80)), rng.random((9, 7))
    before = match_template(scene, probe)
    assert 0.0 < engine._forgone[0] < 0.01  # 82 x 74 windows save well under 10 ms
    assert not compiled.loaded("float64", "float64", compiled.ENERGY)
    engine._forgone[0] = 1e9  # as if many earlier calls had forgone it
    after = match_template(scene, probe)
    assert compiled.loaded("float64", "float64", compiled.ENERGY)
    assert engine._forgone[0] < 1.0  # the account was spent (the roads add their own since)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-13)
