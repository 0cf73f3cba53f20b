# The README's two commands are `make demo` (later `make book`) and `make test`.
# Both create the virtual environment .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,book
MODE ?= ci

.PHONY: setup demo book browser bench gpu-check test test-fast lint lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

demo: setup
	$(BIN)/python -m permlib.demo

# Execute every notebook with papermill (MODE=ci or MODE=full) and build _build/html with
# Jupyter Book (warnings are errors). A notebook re-runs only when one of its inputs changed: its
# source, permlib/, or a file it reads (results, paper tables, benchmarks modules it imports).
book: setup
	$(BIN)/python scripts/build_book.py --mode $(MODE)

# Headless Chromium for tests/book/test_browser.py: a separate step, not part of `make test`
# (which installs no system package; .ci/run calls both). Nothing to do when chromium,
# chromium-browser or google-chrome is on PATH. Otherwise, as root: Debian's `chromium` and the
# packages it depends on, without recommends (--no-install-recommends), after a dry run
# (apt-get -s) that must upgrade no installed package; if it would, nothing is installed.
BROWSERS := chromium chromium-browser google-chrome google-chrome-stable
browser:
	@for b in $(BROWSERS); do \
	  if command -v $$b >/dev/null 2>&1; then echo "browser: $$(command -v $$b)"; exit 0; fi; \
	done; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "browser: no chromium; run 'make browser' as root, or:" \
	    "sudo apt-get install --no-install-recommends chromium"; exit 1; fi; \
	apt-get update -qq && \
	up=$$(apt-get install -s --no-install-recommends chromium | awk '/^Inst/ && $$3 ~ /^\[/ {print $$2}'); \
	if [ -n "$$up" ]; then \
	  echo "browser: installing chromium would upgrade installed packages:" $$up; \
	  echo "browser: nothing installed; install chromium yourself if that is acceptable"; exit 1; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade chromium

# Benchmarks against pygmtools, POT, OTT-JAX, scipy and lapx: BENCH=quick (minutes) or full,
# DEVICE=cpu or cuda. Writes _build/bench/ (git-ignored); RECORD=1 writes the tracked
# benchmarks/results/ instead, and only for a quiet run (a noisy one exits with status 1).
BENCH ?= quick
DEVICE ?= cpu
RECORD ?=
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --$(BENCH) --device $(DEVICE) $(if $(RECORD),--record)

# The GPU path in one unattended run (under 8 minutes, on a machine with CUDA): the gpu-marked
# tests, the Sinkhorn forward against the bandwidth floor at B = 1024, one sorting and one jigsaw
# cell on CUDA, the quick benchmark on CUDA, into _build/gpu_check/<device>/ (GPU_OUT=DIR to
# change). Uses .venv if present, else python3 ($PYTHON to choose); without CUDA it says so and
# exits with status 3. See benchmarks/gpu_check.sh.
GPU_OUT ?=
gpu-check:
	bash benchmarks/gpu_check.sh $(GPU_OUT)

# JupyterLab on the chapters (the `lab` extra: jupyterlab + jupytext, with the book extra's
# kernel and plotting): a notebooks/*.md chapter opens as a notebook with one click (jupytext's
# "Jupytext Notebook" made the default viewer for markdown through JupyterLab's overrides.json).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
lab: setup
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS),lab]'
	mkdir -p $(LAB_SETTINGS)
	printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(LAB_SETTINGS)/overrides.json
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

lint: setup
	$(BIN)/ruff check .

# The browser checks need `make browser` first (skipped without a browser, except in CI).
test: setup lint book
	$(BIN)/python -m pytest

# The fast subset for quick iteration: no book build, no slow tests (CI runs `make test`).
test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/book -q

clean:
	rm -rf $(VENV) _build .pytest_cache .hypothesis
