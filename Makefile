# One entry point for people and CI. The venv is built once; torch's CPU wheel goes in first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench serve clean

$(STAMP): pyproject.toml clients/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]' -e ./clients
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# the edit-test loop: embedded backend, no subprocess servers or trainers (tests/README.md)
test-fast: $(STAMP)
	DEPO_TEST_BACKENDS=embedded HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy service clients/depo_client

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_api

serve: $(STAMP)
	$(BIN)/depo serve

clean:
	rm -rf $(VENV) .depo .pytest_cache .mypy_cache .ruff_cache
