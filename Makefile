# Two entry points for a newcomer: `make quickstart` and `make test`.
# Both create .venv on first use; CPU torch is installed first so pip never pulls a CUDA build. --no-compile: Python
# compiles what is imported on first use instead of every file of torch at install (halves the setup), which needs
# bytecode writing on (unexport: a PYTHONDONTWRITEBYTECODE in the environment would recompile torch in every
# process). The quickstart needs only the package; the tests add the dev and optional extras they check.
VENV ?= .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.core
DEV := $(VENV)/.dev

.PHONY: setup quickstart test test-slow test-formats bench
unexport PYTHONDONTWRITEBYTECODE

$(CORE): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile --no-build-isolation -e .
	touch $(CORE)

# openpi-client (the openpi wire-compatibility test) comes without its dependencies: its metadata caps numpy < 2,
# which its websocket client does not need; as a dev extra it would downgrade numpy. The ray extra lets the test suite
# check that `--backend ray` gives the local backend's results (a local Ray instance, no cluster).
$(DEV): $(CORE)
	$(PY) -m pip install -q --no-compile -e ".[dev,ray,lerobot,vlaeval]"
	$(PY) -m pip install -q --no-compile --no-deps "openpi-client>=0.1.2"
	touch $(DEV)

setup: $(DEV)

quickstart: $(CORE)
	$(VENV)/bin/mvla-sim quickstart --out runs/quickstart

# Tests run torch beside spawned env workers, one thread each; pytest-xdist spreads them over every core.
test: $(DEV)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto

# The end-to-end runs left out of `make test` (marked slow: the quickstart, the study, Ray, ...); CI runs them too.
test-slow: $(DEV)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto -m slow

# LeRobot's own dataset reader checks what `mvla-sim export` writes (tests/test_lerobot.py). It imports torchvision,
# whose wheels match only their own torch build, so it lives in a venv of its own (docs/formats.md); its video
# decoder needs FFmpeg's shared libraries (apt install ffmpeg).
READER := .venv-lerobot
$(READER)/.installed: pyproject.toml
	python3 -m venv $(READER)
	$(READER)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(READER)/bin/python -m pip install -q -e ".[dev,lerobot-reader]"
	touch $@

test-formats: $(READER)/.installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(READER)/bin/python -m pytest -q -p no:cacheprovider tests/test_lerobot.py

bench: $(DEV)
	$(PY) -m benchmarks.run_all
