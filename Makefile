# headforge: one-command set-up.  `make demo` and `make test` create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=68,<81" wheel
	# torch is pinned: 2.13.0 resolves to the local CPU build on CPU-only machines.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/headforge demo --out outputs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check headforge tests benchmarks
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

lint: $(STAMP)
	$(VENV)/bin/ruff check headforge tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/headforge bench

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
