# convfilt — set-up, demo, tests and benchmarks. Needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    := out

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,plot]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p $(OUT)
	$(BIN)/convfilt blur samples/face.png --sigma 2 -o $(OUT)/face-blur.png --force
	$(BIN)/convfilt sharpen samples/page.png --sigma 1 --amount 1.5 -o $(OUT)/page-sharpen.png --force
	$(BIN)/convfilt match samples/face.png samples/patch-probe.png --annotate $(OUT)/face-match.png --force
	@echo "wrote:"; ls -1 $(OUT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check convfilt tests benchmarks
	$(BIN)/ruff format --check convfilt tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
