"""Dask arrays in the Python API, computed on a real distributed.LocalCluster (two worker
processes): lazy results equal to the in-memory ones, wrap right across chunks, chunks
smaller than the kernel's reach."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi
from numpy.typing import NDArray
from PIL import Image
from typer.testing import CliRunner

from convfilt import engine, filters, names, tiles
from convfilt.errors import ConvfiltError, UsageError

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
# the workers cannot import this module: its helpers travel by value
pytest.importorskip("cloudpickle").register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One cluster for the module: two single-threaded worker processes."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


RNG = np.random.default_rng(7)
IMAGE = (RNG.random((230, 70, 3)) * 255).astype(np.uint8)
FLOATS = RNG.random((230, 70)).astype(np.float32)
KERNEL = RNG.standard_normal((33, 5))

CALLS = [
    pytest.param(partial(filters.gaussian_blur, sigma=(9.0, 2.0)), id="gaussian"),
    pytest.param(partial(filters.box_blur, radius=2, radius_y=25), id="box"),
    pytest.param(partial(filters.unsharp_mask, sigma=3.0, amount=2.0), id="unsharp"),
    pytest.param(partial(filters.convolve_image, kernel=KERNEL), id="convolve_image"),
    pytest.param(partial(engine.correlate, kernel=KERNEL), id="correlate"),
    pytest.param(partial(engine.convolve, kernel=KERNEL), id="convolve"),
]


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("mode", names.MODES)
def test_lazy_and_equal_on_the_cluster(client: Any, call: Any, mode: str) -> None:
    """Row chunks of 10 (smaller than the reach of 12-25 rows): no rechunking needed."""
    image = da.from_array(IMAGE, chunks=(10, 32, 3))
    lazy = call(image, mode=mode, cval=40.0, strategy=names.DIRECT)
    assert isinstance(lazy, da.Array) and lazy.chunks == image.chunks
    expected = call(IMAGE, mode=mode, cval=40.0, strategy=names.DIRECT)
    assert lazy.dtype == expected.dtype
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def test_wrap_is_right_across_chunks(client: Any) -> None:
    """dask-image#242: the top rows of a wrapped blur read the image's bottom rows."""
    image = da.from_array(FLOATS, chunks=(50, 70))
    lazy = filters.gaussian_blur(image, 6.0, mode="wrap")
    expected = ndi.gaussian_filter(FLOATS, 6.0, mode="wrap")
    np.testing.assert_allclose(client.compute(lazy).result(), expected, atol=1e-6)


def test_transform_roads_within_tolerance(client: Any) -> None:
    image = da.from_array(FLOATS, chunks=(64, 35))
    for road in names.TRANSFORMS:
        lazy = engine.correlate(image, KERNEL, mode="mirror", strategy=road)
        expected = ndi.correlate(FLOATS.astype(np.float64), KERNEL, mode="mirror")
        np.testing.assert_allclose(client.compute(lazy).result(), expected, atol=1e-4)


def test_alpha_takes_the_whole_images_path(client: Any) -> None:
    rgba = (RNG.random((200, 40, 4)) * 255).astype(np.uint8)
    rgba[..., -1] = 255
    rgba[150:, :5, -1] = 0  # the top bands are opaque, the image is not
    image = da.from_array(rgba, chunks=(64, 40, 4))
    lazy = filters.gaussian_blur(image, 2.0, has_alpha=True, strategy=names.SEPARABLE)
    expected = filters.gaussian_blur(rgba, 2.0, has_alpha=True, strategy=names.SEPARABLE)
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def test_every_band_on_the_cluster_takes_the_whole_images_road(client: Any) -> None:
    """Bands that would plan differently (tests/test_streams.py: a float32 image whose bottom
    rows could overflow a float32 transform) all take the road planned once for the image,
    whichever worker runs them: the in-memory result on that road, bit for bit."""
    from convfilt import tiles
    from tests.test_streams import overflowing_bottom

    pixels, kernel = overflowing_bottom()
    image = da.from_array(pixels, chunks=(256, 300))
    road = tiles.whole_road(image, kernel, filters._plan, {})
    assert road not in names.TRANSFORMS  # the image's max|x| was measured
    lazy = filters.convolve_image(image, kernel, correlate=True)
    expected = filters.convolve_image(pixels, kernel, correlate=True, strategy=road)
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def test_output_dtype_and_refusals() -> None:
    image = da.from_array(FLOATS, chunks=(64, 70))
    lazy = filters.box_blur(image, 1, output=np.float64)
    assert lazy.dtype == np.float64
    with pytest.raises(UsageError, match="output must be a dtype"):
        filters.box_blur(image, 1, output=np.empty(FLOATS.shape))
    with pytest.raises(UsageError, match="channels on the last axis"):
        filters.box_blur(da.zeros((3, 50, 60), chunks=10), 1, channel_axis=0)


# --- the command line on a scheduler ------------------------------------------------------------


def test_cli_scheduler_writes_the_in_process_bytes(client: Any, tmp_path: Path) -> None:
    from convfilt.cli import app

    source = tmp_path / "in.png"
    Image.fromarray(IMAGE).save(source)
    address = client.scheduler.address
    runner = CliRunner()
    # one road on both sides: the compiled one may run in this process (its one-time costs
    # paid by earlier tests) and not on a fresh worker, and float32 sums in another order
    # can round a tie to the other level
    road = ["--strategy", "separable"]
    remote = runner.invoke(
        app,
        [
            "blur",
            str(source),
            "-o",
            str(tmp_path / "r.png"),
            "--scheduler",
            address,
            "--explain",
            *road,
        ],
    )
    assert remote.exit_code == 0, remote.output
    assert "on Dask at" in remote.output and "2 workers" in remote.output
    local = runner.invoke(app, ["blur", str(source), "-o", str(tmp_path / "l.png"), *road])
    assert local.exit_code == 0
    assert (tmp_path / "r.png").read_bytes() == (tmp_path / "l.png").read_bytes()


def test_cli_scheduler_says_nothing_about_large_graphs(client: Any, tmp_path: Path) -> None:
    """The pixels travel inside the tasks (so that a lost band can run again): distributed's
    warning about graphs over 10 MB is not shown, in a real process."""
    import tifffile

    from tests.processes import convfilt

    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.zeros((1900, 1900, 3), np.uint8), photometric="rgb")
    args = ["blur", source, "-o", tmp_path / "out.tif", "--strategy", "separable"]
    done = convfilt(*args, "--scheduler", client.scheduler.address)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"wrote {tmp_path / 'out.tif'}\n"


def test_cli_scheduler_streams_bands_remotely(client: Any, tmp_path: Path) -> None:
    import tifffile

    from convfilt.cli import app

    pixels = (RNG.random((1500, 1200, 3)) * 255).astype(np.uint8)
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, pixels, tile=(128, 128), photometric="rgb")
    target = tmp_path / "out.tif"
    args = ["sharpen", str(source), "-o", str(target), "--memory", "60M", "--explain"]
    road = ["--strategy", "separable"]  # one road on both sides, as above
    result = CliRunner().invoke(app, [*args, *road, "--scheduler", client.scheduler.address])
    assert result.exit_code == 0, result.output
    assert "4 bands in flight on 2 workers" in result.output
    expected = filters.unsharp_mask(pixels, strategy="separable")
    np.testing.assert_array_equal(tifffile.imread(target), expected)


def _meeting_band(pixels: Any, *, band: Any, folder: str) -> Any:
    """A band filter (run on a worker) that says it started, and whose first band waits
    (60 s at most) until another band has started: it fails unless two run at once."""
    import os

    open(os.path.join(folder, str(band.start)), "w").close()
    waited = 0.0
    while band.start == 0 and len(os.listdir(folder)) < 2:
        if waited > 60:
            raise RuntimeError("no other band ran beside the first")
        time.sleep(0.05)
        waited += 0.05
    return filters.box_blur(pixels, 2, band=band, strategy=names.SEPARABLE)


def test_streamed_bands_run_side_by_side_on_the_cluster(client: Any, tmp_path: Path) -> None:
    """Several bands in flight (tiles.run's lanes, over tiles.remote): the first band only
    finishes once a second one runs on the other worker; the result is the in-memory one."""
    from convfilt import tiles

    folder = tmp_path / "started"
    folder.mkdir()
    func = partial(_meeting_band, folder=str(folder))
    layout = tiles.Layout(230, 70, 64, 2, names.SEPARABLE)
    parts: dict[int, Any] = {}
    lanes = tiles.in_flight(layout, IMAGE.shape, IMAGE.dtype, 2**30, tiles.workers(client))
    assert lanes == 4  # two per worker, well within 1 GiB
    tiles.run(IMAGE, tiles.remote(client, func), layout, "reflect", parts.__setitem__, lanes=lanes)
    assert sorted(p.name for p in folder.iterdir()) == ["0", "128", "192", "64"]
    got = np.concatenate([parts[start] for start in sorted(parts)])
    np.testing.assert_array_equal(got, filters.box_blur(IMAGE, 2, strategy=names.SEPARABLE))


def test_bands_in_flight_stay_within_the_budget() -> None:
    from convfilt import tiles

    layout = tiles.Layout(10_000, 1000, 256, 8, names.SEPARABLE)
    band = (256 + 16) * 3000  # bytes of one band's rows of an RGB uint8 image
    for budget, expected in [(2**30, 8), (tiles.FIXED_BYTES + 13 * band, 3), (0, 1)]:
        assert tiles.in_flight(layout, (10_000, 1000, 3), np.dtype(np.uint8), budget, 4) == expected


def test_cli_unreachable_scheduler_one_line(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(IMAGE).save(source)
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convfilt",
            "blur",
            str(source),
            "-o",
            str(tmp_path / "o.png"),
            "--scheduler",
            "tcp://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert time.perf_counter() - start < 30  # within a few seconds, plus Python's start-up
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--scheduler tcp://127.0.0.1:9" in done.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_nan_policy_on_the_cluster(client: Any, policy: str) -> None:
    """Holes (one wider than the kernel, across chunks) give the in-memory answer."""
    holey = FLOATS.copy()
    holey[RNG.random(holey.shape) < 0.02] = np.nan
    holey[100:130, 20:40] = np.nan
    blur = partial(filters.gaussian_blur, sigma=2.0, nan_policy=policy, strategy=names.DIRECT)
    lazy = blur(da.from_array(holey, chunks=(40, 70)))
    got = client.compute(lazy).result()
    np.testing.assert_array_equal(got, blur(holey))
    assert np.isnan(got).any() and (policy == "propagate" or np.isnan(got).sum() < 100)


@pytest.mark.parametrize(
    ("top", "min_distance", "method"),
    [(1, None, "ncc"), (7, None, "ncc"), (25, 3, "sqdiff"), (40, 1, "ncc")],
)
def test_find_matches_on_a_dask_map_suppresses_across_seams(top, min_distance, method) -> None:
    from convfilt import matching

    rng = np.random.default_rng(top)
    field = ndi.gaussian_filter(rng.random((150, 170)), 2.0)  # peaks that straddle seams
    field[:3] = field.max()  # a plateau along the border
    expected = matching.find_matches(
        field, probe_shape=(9, 11), method=method, top=top, min_distance=min_distance
    )
    lazy = da.from_array(field, chunks=(23, 31))
    found = matching.find_matches(
        lazy, probe_shape=(9, 11), method=method, top=top, min_distance=min_distance
    )
    assert found == expected and len(found) == top


# --- match_template on a dask scene ------------------------------------------------------------

SCENE = RNG.random((70, 90, 3))
PROBE = SCENE[30:42, 50:66].copy()  # 12 x 16: larger than some chunks below
PROBE_MASK = (RNG.random((12, 16)) > 0.3) * 1.0


@pytest.mark.parametrize("method", names.MATCH_METHODS)
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "probe-mask"])
def test_match_template_lazy_and_equal_on_the_cluster(
    client: Any, method: str, masked: bool
) -> None:
    """Chunks of 9 x 20 (rows smaller than the probe: rechunked, not refused); the blocks
    overlap by the probe's size - 1; find_matches on the lazy map suppresses across seams."""
    from convfilt import matching

    mask = PROBE_MASK if masked else None
    scene = da.from_array(SCENE, chunks=(9, 20, 3))
    lazy = matching.match_template(scene, PROBE, method=method, mask=mask)
    expected = matching.match_template(SCENE, PROBE, method=method, mask=mask)
    assert isinstance(lazy, da.Array) and lazy.shape == expected.shape == (59, 75)
    assert len(lazy.chunks[0]) > 1 and len(lazy.chunks[1]) > 1  # several blocks each way
    got = client.compute(lazy).result()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    if masked or method != names.NCC:
        return  # find_matches on a lazy map once (each of its computes is a round trip)
    held = client.persist(lazy)  # still a dask array, its blocks held on the workers
    found = matching.find_matches(held, probe_shape=PROBE.shape, top=2)
    want = matching.find_matches(expected, probe_shape=PROBE.shape, top=2)
    assert [(m.x, m.y) for m in found] == [(m.x, m.y) for m in want]
    assert [m.score for m in found] == pytest.approx([m.score for m in want], rel=1e-12)
    assert (found[0].x, found[0].y) == (50, 30)


def test_match_template_on_dask_with_unknown_pixels_and_float32(client: Any) -> None:
    """NaN pixels (a whole block of them: NaN there, as in memory) and a scene mask; a
    float32 scene takes the float32 road block by block (scores within its 1e-3 bound)."""
    from convfilt import matching

    holed = SCENE.copy()
    holed[:, :25] = np.nan  # blocks with no known pixel
    holed[33, 55] = np.nan
    lazy = matching.match_template(da.from_array(holed, chunks=(30, 30, 3)), PROBE)
    expected = matching.match_template(holed, PROBE)
    got = client.compute(lazy).result()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    known = (RNG.random(SCENE.shape[:2]) > 0.2) * 1.0
    lazy = matching.match_template(
        da.from_array(SCENE, chunks=(40, 40, 3)), PROBE, method="sqdiff", scene_mask=known
    )
    expected = matching.match_template(SCENE, PROBE, method="sqdiff", scene_mask=known)
    np.testing.assert_allclose(client.compute(lazy).result(), expected, atol=1e-10)
    single = SCENE.astype(np.float32)
    lazy = matching.match_template(
        da.from_array(single, chunks=(32, 45, 3)), PROBE.astype(np.float32)
    )
    got = client.compute(lazy).result()
    np.testing.assert_allclose(
        got, matching.match_template(single, PROBE.astype(np.float32)), atol=1e-3
    )
    # the float32 road, not float64's: its rounding shows beside the float64 map
    wide = matching.match_template(single.astype(np.float64), PROBE.astype(np.float64))
    assert np.max(np.abs(got - wide)) > 1e-10
    with pytest.raises(UsageError, match="does not fit"):
        matching.match_template(da.from_array(SCENE, chunks=40), PROBE, scene_mask=known[1:])
    with pytest.raises(UsageError, match="channel"):
        matching.match_template(da.from_array(SCENE[..., 0], chunks=40), PROBE)


# --- a worker that dies mid-run ------------------------------------------------------------------


WorkerPlugin: Any = distributed.WorkerPlugin


class KillAtTask(WorkerPlugin):
    """Kill the worker's own process (SIGKILL) when the cluster's ``at``-th task starts
    executing (tasks counted across workers by files made with O_EXCL in ``folder``), and,
    with ``always``, whenever that same task starts again, so that the scheduler gives up."""

    def __init__(self, folder: str, at: int, always: bool) -> None:
        self.folder, self.at, self.always = folder, at, always

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        import os
        import signal

        if finish != "executing":
            return
        doomed = os.path.join(self.folder, "doomed")
        if self.always and os.path.exists(doomed):
            with open(doomed) as file:
                if file.read() == repr(key):
                    os.kill(os.getpid(), signal.SIGKILL)
        number = 0
        while True:  # this task's number: the first free one
            try:
                os.close(os.open(os.path.join(self.folder, str(number)), os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                number += 1
        if number == self.at:
            with open(doomed, "w") as file:
                file.write(repr(key))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def fragile() -> Iterator[Any]:
    """A cluster of its own for the tests that kill workers (two worker processes, nannies
    that restart them); the scheduler gives up on a task once 2 workers died running it."""
    import dask

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


@pytest.fixture
def killer(fragile: Any, tmp_path: Path) -> Iterator[Callable[[int, bool], None]]:
    """``killer(at, always)`` arms :class:`KillAtTask` on the fragile cluster (disarmed after)."""
    counts = tmp_path / "tasks"
    counts.mkdir()
    fragile.wait_for_workers(2, timeout=30)

    def arm(at: int, always: bool) -> None:
        fragile.register_plugin(KillAtTask(str(counts), at, always), name="kill")

    yield arm
    fragile.unregister_worker_plugin("kill")
    fragile.wait_for_workers(2, timeout=60)  # the nannies have restarted the dead ones


def _big_tiff(tmp_path: Path) -> tuple[Path, NDArray[np.uint8]]:
    import tifffile

    pixels = (RNG.random((700, 300, 3)) * 255).astype(np.uint8)
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, pixels, tile=(128, 128), photometric="rgb")
    return source, pixels


def test_a_worker_killed_once_mid_run_its_band_reruns_and_the_bytes_match(
    fragile: Any, killer: Any, tmp_path: Path
) -> None:
    """The contract: a band lost with its worker is run again on a worker left (Dask's own
    retry, up to the scheduler's allowed-failures), so the output is the in-process one."""
    import tifffile

    from convfilt.cli import app

    source, pixels = _big_tiff(tmp_path)
    killer(1, False)  # the second band's worker dies as it starts it
    target = tmp_path / "out.tif"
    args = ["blur", str(source), "-o", str(target), "--memory", "52M", "--explain"]
    road = ["--strategy", "separable"]  # one road on both sides (see above)
    result = CliRunner().invoke(app, [*args, *road, "--scheduler", fragile.scheduler.address])
    assert result.exit_code == 0, result.output
    assert "streamed: 3 bands" in result.output  # more than one band: killed mid-run
    assert len(list((tmp_path / "tasks").iterdir())) >= 5  # 3 bands, the rerun one, doomed
    expected = filters.gaussian_blur(pixels, 2.0, strategy="separable")
    np.testing.assert_array_equal(tifffile.imread(target), expected)


def test_a_lazy_filter_survives_a_worker_killed_mid_compute(
    fragile: Any, killer: Any, tmp_path: Path
) -> None:
    """The Python API: a lazy result computed by the caller's own client is Dask's to retry."""
    from convfilt import tiles

    killer(2, False)
    image = da.from_array(IMAGE, chunks=(64, 70, 3))
    lazy = filters.gaussian_blur(image, 3.0)
    road = tiles.whole_road(image, filters.gaussian_kernel(3.0), filters._plan, {})
    expected = filters.gaussian_blur(IMAGE, 3.0, strategy=road)
    np.testing.assert_array_equal(fragile.compute(lazy).result(), expected)
    assert (tmp_path / "tasks" / "2").exists()  # the task the worker died starting


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "in-memory"])
def test_a_worker_dying_at_every_try_fails_in_one_line_and_writes_nothing(
    fragile: Any, killer: Any, tmp_path: Path, streamed: bool
) -> None:
    """When the scheduler gives up (every worker that runs the band dies): exit 1, one line,
    no output and no temporary left, in a real process."""
    from tests.processes import convfilt

    source, pixels = _big_tiff(tmp_path)
    if not streamed:
        source = tmp_path / "in.png"
        Image.fromarray(pixels).save(source)
    killer(1, True)
    target = tmp_path / "out.tif"
    done = convfilt(
        "blur", source, "-o", target, "--memory", "52M" if streamed else "1G",
        "--scheduler", fragile.scheduler.address,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "a worker died mid-run" in done.stderr
    assert (tmp_path / "tasks" / "doomed").exists()  # the task killed at every try
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.tif", "tasks"]
        + ([] if streamed else ["in.png"]))  # fmt: skip


@pytest.fixture
def silent_port() -> Any:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def babbling_port() -> Any:
    """A port that greets every connection with something other than Dask (an SSH banner)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                peer, _ = server.accept()
            except OSError:
                continue
            peer.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(range(256)) * 64)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("port", ["silent_port", "babbling_port"])
def test_a_scheduler_address_that_is_no_scheduler_is_answered_in_seconds(
    port: str, request: pytest.FixtureRequest
) -> None:
    address = f"tcp://127.0.0.1:{request.getfixturevalue(port)}"
    start = time.perf_counter()
    with pytest.raises(ConvfiltError, match="cannot connect within 5 s") as caught:
        tiles.connect(address)
    assert time.perf_counter() - start < tiles.CONNECT_SECONDS + 5
    assert "memory" not in str(caught.value)  # a garbage frame is not an out-of-memory
