# Two commands for a newcomer: `make serve` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the runtime (the server and its client: all make serve needs), then the test, lint
# and docs tools besides (make test).
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
# Every install takes its versions from constraints.txt (CI and the Dockerfile too).
PIP := $(BIN)/pip install --quiet -c constraints.txt
ARGS ?=

.PHONY: install runtime serve test test-fast lint docs bench model topology constraints clean

install: $(STAMP)
runtime: $(RUNTIME)

$(RUNTIME): pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP) -e ./client -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(PIP) -e ./client -e ".[test]"
	touch $(STAMP)

serve: runtime  ## start the server on the default model (flags: make serve ARGS="--model seed")
	$(BIN)/stateful-rnn serve $(ARGS)

# Three workers on two cores: most tests wait on a server, a subprocess or Redis, not on the CPU.
# A module's tests stay on one worker (its servers are shared). The tests that measure latency
# (marker serial) run afterwards, alone. pytest's status 5 is "nothing selected" (ARGS="-k ...").
XDIST := -n 3 --dist loadfile
FAST := not (process or deploy or browser or network or serial or slow)

test: install  ## the whole suite, every tier (CI runs this; ARGS go to pytest)
	@$(BIN)/pytest $(XDIST) -m "not serial" $(ARGS); parallel=$$?; \
	$(BIN)/pytest -p no:xdist -m serial $(ARGS); serial=$$?; \
	for status in $$parallel $$serial; do [ $$status -eq 0 ] || [ $$status -eq 5 ] || exit $$status; done

test-fast: install  ## the fast tier (under a minute): no process, deploy, browser, network, serial or slow test
	$(BIN)/pytest $(XDIST) -m "$(FAST)" $(ARGS)

docs: install  ## the docs site (MkDocs, Material) at http://127.0.0.1:8800, rebuilt as docs/ changes
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8800

lint: install  ## ruff: the lint rules and the formatting (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install  ## the benchmark against its ceilings and the naive baseline (needs wrk; ARGS="--quick")
	$(PIP) -e ".[bench]"
	$(BIN)/python -m bench.run $(ARGS)

topology: install  ## redis-server, 3 replicas and nginx on :8080, as local processes (flags: ARGS="--replicas 2")
	$(BIN)/python -m deploy.topology $(ARGS)

model: install  ## retrain the built-in default model (app/model/default.keras)
	$(BIN)/python scripts/train_default_model.py

constraints: install  ## pin every package again at what .venv holds (after changing a dependency)
	$(PIP) -e ".[bench]"
	( sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '@ file' ) > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
