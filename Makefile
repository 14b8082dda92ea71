# headforge: one-command set-up.  `make demo` and `make test` create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean browser-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=68,<81" wheel
	# torch is pinned: 2.13.0 resolves to the local CPU build on CPU-only machines.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,viewer,preprocess]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/headforge demo --out outputs/demo

# The viewer's browser test drives Debian's chromium + chromedriver (never a downloaded browser).
# Installed when missing and running as root with apt-get; otherwise the test skips, saying why.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "browser-deps: apt-get could not install chromium; the viewer's browser test will skip"; \
	else \
		echo "browser-deps: chromium/chromedriver missing and not root with apt-get; the viewer's browser test will skip"; \
	fi

test: $(STAMP) browser-deps
	$(VENV)/bin/ruff check headforge tests benchmarks
	$(PY) -m pytest -q -m "not slow" tests

# Exit code 5 means no test is marked slow: nothing to run is not a failure.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check headforge tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/headforge bench

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
