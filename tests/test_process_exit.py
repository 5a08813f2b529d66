"""The process entry point (``cli.run``) ends without Python's teardown, and loses nothing.

Each test runs a fresh interpreter: ``cli.run`` against ``cli.main`` (the normal exit) on the
same commands, exit handlers registered during a command, and a crash.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENTRY = """
import sys
from convfilt import cli
sys.argv = ["convfilt", *sys.argv[1:]]
cli.{entry}()
"""


def python(script: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -c SCRIPT ARGS`` in ``cwd``; stdout and stderr captured (bytes)."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )


def entry(name: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``cli.<name>()`` as a process's entry, with ``args``."""
    return python(ENTRY.format(entry=name), *args, cwd=cwd)


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    pixels = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    return tmp_path / "in.png"


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("kernel", "sobel-x"),
        ("kernel", "sobel-x", "--json"),
        ("blur", "in.png", "--sigma", "2", "-o", "-", "--format", "png"),
        ("blur", "missing.png"),
        ("blur", "in.png", "--sigma", "-1"),
        ("blur", "in.png", "--no-such-option"),
    ],
)
def test_the_fast_exit_gives_the_normal_exits_bytes_and_status(
    tmp_path: Path, picture: Path, args: tuple[str, ...]
) -> None:
    fast = entry("run", *args, cwd=tmp_path)
    normal = entry("main", *args, cwd=tmp_path)
    assert fast.returncode == normal.returncode, (fast.stderr, normal.stderr)
    assert fast.stdout == normal.stdout and fast.stderr == normal.stderr
    assert len(fast.stdout) + len(fast.stderr) > 0  # each case says something


def test_a_written_file_is_whole_and_the_status_zero(tmp_path: Path, picture: Path) -> None:
    done = entry("run", "blur", "in.png", "--sigma", "2", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (50, 40)
        out.load()  # every byte there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]  # no temporary


HANDLER_DURING_THE_COMMAND = """
import atexit, sys
from pathlib import Path
from convfilt import cli, images
real = images.load
def load(*args, **kwargs):
    atexit.register(Path("marker").write_text, "ran")
    return real(*args, **kwargs)
images.load = load
sys.argv = ["convfilt", "blur", "in.png", "-o", "out.png"]
cli.run()
"""


def test_exit_handlers_registered_during_the_command_still_run(
    tmp_path: Path, picture: Path
) -> None:
    done = python(HANDLER_DURING_THE_COMMAND, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "marker").read_text() == "ran"


CRASH = """
import sys
from convfilt import cli, images
def load(*args, **kwargs):
    raise RuntimeError("a bug")
images.load = load
sys.argv = ["convfilt", "blur", "in.png", "-o", "out.png"]
cli.run()
"""


def test_a_crash_keeps_pythons_own_exit(tmp_path: Path, picture: Path) -> None:
    done = python(CRASH, cwd=tmp_path)
    assert done.returncode == 1
    assert b"RuntimeError: a bug" in done.stderr
    assert not (tmp_path / "out.png").exists()


TEARDOWN = """
import sys
from pathlib import Path
from convfilt import cli
class Marker:
    def __del__(self):  # runs when the interpreter tears the module down
        Path("torn-down").write_text("yes")
marker = Marker()
sys.argv = ["convfilt", "kernel", "sobel-x"]
cli.{entry}()
"""


@pytest.mark.parametrize(("name", "torn_down"), [("run", False), ("main", True)])
def test_the_entry_skips_the_teardown_and_main_does_not(
    tmp_path: Path, name: str, torn_down: bool
) -> None:
    done = python(TEARDOWN.format(entry=name), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"sobel" in done.stdout.lower()
    assert (tmp_path / "torn-down").exists() == torn_down


EARLIER_HANDLER = """
import atexit, sys
from pathlib import Path
atexit.register(Path("earlier").write_text, "ran")  # as a site hook (coverage) would
from convfilt import cli
sys.argv = ["convfilt", "kernel", "sobel-x"]
cli.run()
"""


def test_a_handler_registered_before_the_entry_keeps_the_normal_exit(tmp_path: Path) -> None:
    done = python(EARLIER_HANDLER, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "earlier").read_text() == "ran"


def test_importing_the_command_line_registers_only_loggings_exit_handler(tmp_path: Path) -> None:
    """What the fast end rests on (cli._only_loggings): were an import to register a handler,
    or weakref's, every command would end the normal way, or lose that handler's work."""
    script = (
        "import atexit, weakref\n"
        "import convfilt.cli\n"
        "print(atexit._ncallbacks(), weakref.finalize._registered_with_atexit)"
    )
    done = python(script, cwd=tmp_path)
    assert done.stdout.split() == [b"1", b"False"], done.stderr
