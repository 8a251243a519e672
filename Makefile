# Two entry points for a newcomer: `make quickstart` and `make test`.
# Both create .venv on first use; CPU torch is installed first so pip never pulls a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test bench

# openpi-client (the openpi wire-compatibility test) comes without its dependencies: its metadata caps numpy < 2,
# which its websocket client does not need; as a dev extra it would downgrade numpy. The ray extra lets the test suite
# check that `mvla-sim study --backend ray` gives the local backend's cells (a local Ray instance, no cluster).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pip install -q --no-deps "openpi-client>=0.1.2"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(VENV)/bin/mvla-sim quickstart --out runs/quickstart

test: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q  # tests run torch beside spawned env workers: 1 thread each

bench: setup
	$(VENV)/bin/python -m benchmarks.run_all
