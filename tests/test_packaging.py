"""Packaging: the version in one place, the licence declared, and an sdist whose tests run."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

import convfilt

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("convfilt") == convfilt.__version__


def test_licence_and_classifiers_reach_the_metadata() -> None:
    metadata = importlib.metadata.metadata("convfilt")
    assert metadata["License-Expression"] == "MIT"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert (ROOT / "convfilt" / "py.typed").exists()


def test_the_dev_tools_are_pinned_for_make_test() -> None:
    pins = (ROOT / "constraints-dev.txt").read_text(encoding="utf-8")
    for tool in ("ruff", "mypy"):
        assert f"{tool}==" in pins
        assert importlib.metadata.version(tool) in pins
    assert "-c constraints-dev.txt" in (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source distribution of this tree, built and unpacked."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (archive,) = out.glob("convfilt-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / archive.name.removesuffix(".tar.gz")


def test_the_sdist_carries_what_its_tests_need(sdist: Path) -> None:
    for needed in ("tests/conftest.py", "tests/processes.py", "samples/face.png", "LICENSE",
                   "CHANGELOG.md", "CITATION.cff", "constraints-dev.txt", "Makefile"):  # fmt: skip
        assert (sdist / needed).exists(), needed


def test_the_sdists_tests_run(sdist: Path) -> None:
    # the unpacked sources first on the path: the tests import the sdist's convfilt
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_layers.py", "convfilt/engine.py"],
        cwd=sdist,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "[100%]" in done.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import convfilt; print(convfilt.__file__)"],
        cwd=sdist,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(sdist)
