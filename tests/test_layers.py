"""The layers: no import cycle, no command-line flag in the library, one source for names."""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

import pytest

import convfilt
from convfilt import bench, cost, deconvolution, engine, matching, names

PACKAGE = Path(convfilt.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__main__")
# The command line's own modules: the only ones that may speak in flags.
COMMAND_LINE = {"cli", "report", "__main__"}


def _imported(module: str) -> set[str]:
    """The convfilt modules ``module`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not base.startswith("convfilt"):
                continue
            base = base.removeprefix("convfilt").lstrip(".")
            if base:
                found.add(base.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("convfilt.")
            )
    return found & set(MODULES) - {module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*path[path.index(child) :], child]
            if child not in state and (found := visit(child)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it() -> None:
    graph = {module: _imported(module) for module in MODULES}
    assert graph["engine"] >= {"calibration", "cost"}  # the reader sees real edges
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(f"convfilt.{module}")


def test_the_cost_model_is_pure_and_names_import_nothing() -> None:
    assert _imported("cost") <= {"names"}
    assert _imported("names") == set()
    source = (PACKAGE / "names.py").read_text(encoding="utf-8")
    imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _flags_in_strings(module: str) -> list[str]:
    """``--flag`` words in the string literals (docstrings included) of ``module``."""
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    hits = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING:
            hits += [f"line {token.start[0]}: {flag}" for flag in FLAG.findall(token.string)]
    return hits


def test_the_flag_finder_sees_flags() -> None:
    assert FLAG.findall('"use --force, or --max-pixels"') == ["--force", "--max-pixels"]
    assert FLAG.findall('"a--b, 1 -- 2, ---"') == []
    assert _flags_in_strings("cli")  # the command line does name flags


@pytest.mark.parametrize("module", sorted(set(MODULES) - COMMAND_LINE))
def test_library_strings_name_no_command_line_flag(module: str) -> None:
    assert _flags_in_strings(module) == []


def test_each_table_is_keyed_by_the_names_module() -> None:
    assert tuple(engine.STRATEGY_TABLE) == names.STRATEGIES
    assert tuple(engine.EXTENSIONS) == names.MODES
    assert tuple(bench.PAD_MODES) == names.MODES
    assert set(cost.ESTIMATORS) <= set(names.STRATEGIES)
    assert tuple(matching.METHODS) == names.MATCH_METHODS
    assert cost.DTYPES == names.FLOAT_DTYPES
    assert tuple(deconvolution.METHOD_TABLE) == names.DECONVOLUTION_METHODS


MAX_BODY_LINES = 60


def _long_functions(module: str) -> list[str]:
    """Functions of ``module`` whose body, docstring aside, spans more than 60 lines."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        if body and (lines := body[-1].end_lineno - body[0].lineno + 1) > MAX_BODY_LINES:  # type: ignore[operator]
            found.append(f"{node.name}: {lines} lines")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_function_body_is_longer_than_a_screen(module: str) -> None:
    assert _long_functions(module) == []


@pytest.mark.parametrize("name", [n for n in convfilt.__all__ if n[0].islower() and n[0] != "_"])
def test_the_public_api_has_numpydoc_with_examples(name: str) -> None:
    import inspect

    function = getattr(convfilt, name)
    doc = inspect.getdoc(function) or ""
    sections = ["Returns", "Examples"]
    if inspect.signature(function).parameters:
        sections.append("Parameters")
    for section in sections:
        assert f"{section}\n{'-' * len(section)}" in doc, (name, section)
    assert ">>> " in doc
