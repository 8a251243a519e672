# Two entry points for a newcomer: `make quickstart` and `make test`.
# Both create .venv on first use; CPU torch is installed first so pip never pulls a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(VENV)/bin/mvla-sim quickstart --out runs/quickstart

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/python -m benchmarks.run_all
