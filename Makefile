# Two commands for a newcomer: `make serve` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install serve test test-fast lint docs bench model topology clean

install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e ".[test]"
	touch $(STAMP)

serve: install  ## start the server on the default model (flags: make serve ARGS="--model seed")
	$(BIN)/stateful-rnn serve $(ARGS)

test: install  ## run the whole test suite (both tiers)
	$(BIN)/pytest $(ARGS)

test-fast: install  ## the in-process tier only: route contracts, errors and schemas (under a minute)
	$(BIN)/pytest tests/routes $(ARGS)

docs: install  ## the docs site (MkDocs, Material) at http://127.0.0.1:8001, rebuilt as docs/ changes
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001

lint: install  ## ruff: the lint rules and the formatting (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install  ## the benchmark against its ceilings and the naive baseline (needs wrk; ARGS="--quick")
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.run $(ARGS)

topology: install  ## redis-server, 3 replicas and nginx on :8080, as local processes (flags: ARGS="--replicas 2")
	$(BIN)/python -m deploy.topology $(ARGS)

model: install  ## retrain the built-in default model (app/model/default.keras)
	$(BIN)/python scripts/train_default_model.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
