# deepnotes: `make run` (set up and run the default pipeline) and `make test` (set up and run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed
MLFLOW_PORT ?= 5000
SERVE_PORT ?= 5001

# The data mirror: ../shared/data when it exists; otherwise files are downloaded and verified.
ifneq ($(wildcard ../shared/data),)
export DEEPNOTES_DATA_MIRROR ?= $(abspath ../shared/data)
endif
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint format install plots ui serve bench bench-tune bench-diagnostics clean-tracking warm-stop

run: install  ## set up and run the default pipeline (dvc repro)
	$(BIN)/dvc repro

test: install lint  ## set up, lint and type-check, and run the test suite
	$(BIN)/python -m pytest

lint: install  ## ruff (lint and format check) and mypy, as configured in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

install: $(STAMP)

# torch is installed first and exactly, so pip never resolves a multi-GB CUDA build on a CPU machine.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pipelines.offline_plots  # the offline HTML template of `dvc plots show` (.dvc/config)
	touch $(STAMP)

# The template is git-ignored (.dvc/tmp); rewrite it when missing, since DVC does not fall back without it.
plots: install  ## dvc plots show, rendered offline (vega inlined); prints the file:// URI of the HTML
	test -f .dvc/tmp/plots-offline.html || $(BIN)/python -m pipelines.offline_plots
	$(BIN)/dvc plots show

# The URL carries workflowType=machine_learning: MLflow 3.17 opens experiments as GenAI unless its sidebar switch
# says "Model training" (pipelines/tracking.py, KIND).
ui: install  ## MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over the repo's tracking store (lean settings); prints the runs table's URL
	mkdir -p mlflow/artifacts
	@$(BIN)/python -c 'from pipelines.tracking import runs_table_url; print("runs table:", runs_table_url("http://127.0.0.1:$(MLFLOW_PORT)"))'
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --workers 1 --backend-store-uri sqlite:///$(abspath mlflow/mlflow.db) \
	  --default-artifact-root $(abspath mlflow/artifacts) --artifacts-destination $(abspath mlflow/artifacts)

.PHONY: dashboard
DASHBOARD_PORT ?= 8080
dashboard: install  ## optuna-dashboard on http://127.0.0.1:$(DASHBOARD_PORT)/dashboard over the study storage (tuning.storage, else studies/deepnotes.journal)
	$(BIN)/python -m pipelines.tuning.dashboard --port $(DASHBOARD_PORT)

serve: install  ## serve a registered model's champion over HTTP: make serve MODEL=deepnotes-lenet5_mnist [SERVE_PORT=5001]
	@test -n "$(MODEL)" || { echo "usage: make serve MODEL=deepnotes-<experiment> [SERVE_PORT=5001]"; exit 2; }
	MLFLOW_TRACKING_URI=sqlite:///$(abspath mlflow/mlflow.db) MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false \
	  $(BIN)/mlflow models serve -m "models:/$(MODEL)@champion" --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

bench: install  ## run the benchmarks and rewrite benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks.run_all

bench-tune: install  ## the search benchmark (TPE + pruning vs random, 1 vs 2 workers): benchmarks/TUNING.md
	$(BIN)/python -m benchmarks.tune_search

bench-diagnostics: install  ## the cost of the gradient diagnostics (off / every 25 / every step): benchmarks/DIAGNOSTICS.md
	$(BIN)/python -m benchmarks.diagnostics_overhead

warm-stop:  ## stop the warm stage servers (pipelines/warm.py; each also exits after 5 idle minutes)
	$(BIN)/python -m pipelines.warm stop
