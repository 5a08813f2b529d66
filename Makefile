# convfilt — set-up, demo, tests and benchmarks. Needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    := out

.PHONY: demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip compiles an installed package's bytecode, but not an editable one's; where
# PYTHONDONTWRITEBYTECODE is set, every start would then compile every module (~30 ms)
COMPILE := $(BIN)/python -m compileall -q convfilt

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(COMPILE)
	touch $@

# the dev tools at the versions constraints-dev.txt pins, so that a release cannot fail CI
$(VENV)/.installed-dev: pyproject.toml constraints-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints-dev.txt
	$(COMPILE)
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml constraints-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,plot]' -c constraints-dev.txt
	$(COMPILE)
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p $(OUT)
	$(BIN)/convfilt blur samples/face.png --sigma 2 -o $(OUT)/face-blur.png --force
	$(BIN)/convfilt sharpen samples/page.png --sigma 1 --amount 1.5 -o $(OUT)/page-sharpen.png --force
	$(BIN)/convfilt match samples/face.png samples/patch-probe.png --annotate $(OUT)/face-match.png --force
	@echo "wrote $(OUT)/face-blur.png $(OUT)/page-sharpen.png $(OUT)/face-match.png"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check convfilt tests benchmarks
	$(BIN)/ruff format --check convfilt tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.run

# The README's pictures, each made by convfilt itself from samples/.
CF := $(BIN)/convfilt
docs: $(VENV)/.installed-bench
	@mkdir -p docs
	$(CF) blur samples/face.png --sigma 4 -o docs/face-blur.png --force
	$(CF) sharpen samples/page.png --sigma 2 --amount 2 -o docs/page-sharpen.png --force
	for k in sobel-x emboss gaussian:3; do \
	  name=$$(echo $$k | tr -d :); \
	  $(CF) convolve samples/cells.png -k $$k -o docs/cells-$$name-convolve.png --force && \
	  $(CF) convolve samples/cells.png -k $$k --correlate -o docs/cells-$$name-correlate.png --force; \
	done
	cmp -s docs/cells-gaussian3-convolve.png docs/cells-gaussian3-correlate.png
	$(CF) match samples/face.png samples/patch-probe.png --annotate docs/face-match.png \
	  --heatmap docs/face-heatmap.png --force
	for k in sobel-x emboss motion:9:30 box:4; do \
	  name=$$(echo $$k | tr -d :); \
	  $(CF) kernel $$k --plot docs/kernel-$$name.png --size 32 --force > docs/kernel-$$name.txt; \
	done
	$(CF) deblur docs/face-blur.png --psf gaussian:4 -o docs/face-deblur.png --force
	$(CF) bench --plot docs/bench.png --force > docs/bench.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
