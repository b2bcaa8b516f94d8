# Nyx: the two commands a newcomer needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)

# The venv's tools (dagster, mlflow, dvc, uvicorn for `mlflow models serve`) come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Nothing reaches the network at run time.
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false
# PYTHONDONTWRITEBYTECODE is set on these machines; imports are ~2x slower without bytecode.
export PYTHONDONTWRITEBYTECODE :=
# DeepSpeed builds no C++ ops at install time.
export DS_BUILD_OPS := 0

.PHONY: venv run test lint ui bench faults lock clean-state

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## make run: install, then materialise the whole asset graph on the bundled sample (tiny offline models).
run: venv
	$(BIN)/python -m orchestration.run_sample

## make test: install, lint (fails fast on a lint, format or type error), then run the test suite.
test: venv lint
	$(BIN)/python -m pytest -q

## make lint: ruff (lint rules and formatting, [tool.ruff] in pyproject.toml) and mypy on nyx/ ([tool.mypy]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make ui: the Dagster UI (http://127.0.0.1:3000) and the MLflow UI (http://127.0.0.1:5000).
ui: venv
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m orchestration.instance_setup
	# Ctrl-C (or SIGTERM) stops both servers and all their children. `dagster dev` started in the background
	# ignores SIGINT unless its default handler is restored (env --default-signal).
	trap 'trap - INT TERM EXIT; kill -TERM 0' INT TERM EXIT; \
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1 & \
	env --default-signal=INT $(BIN)/dagster dev -h 127.0.0.1 -p 3000 & \
	wait

## make bench: speed and memory benchmarks (print tables, write JSON under benchmarks/results/).
bench: venv
	$(BIN)/python benchmarks/encode_search.py

## make faults: inject operator faults into a scratch copy of the sample pipeline and print how each recovered.
faults: venv
	$(BIN)/python -m benchmarks.faults

## make lock: re-resolve requirements.lock from pyproject.toml's direct dependencies.
lock:
	rm -rf /tmp/nyx-lock && $(PY) -m venv /tmp/nyx-lock && /tmp/nyx-lock/bin/pip install -q -U pip==26.3
	/tmp/nyx-lock/bin/pip install -q -e . && /tmp/nyx-lock/bin/pip check
	{ echo "# Fully pinned environment (pip freeze of requirements in pyproject.toml). Regenerate with 'make lock'."; \
	  /tmp/nyx-lock/bin/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; } > requirements.lock
