# make demo: run the demo on ./state.  make test: the whole test suite.  make lint: ruff + mypy.
# make diagrams: regenerate diagrams/ from the workflows (a test fails when they are stale).
# make bench / make bench-quick: the benchmark suite (DBOS Transact installed for comparison).
# make soak: the reliability campaigns at their large budgets (CI runs them small in make test).
# The first use creates .venv and installs the project into it (again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint diagrams bench bench-quick soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || \
		{ rm -rf $(VENV); $(PYTHON) -m pip install --quiet --user virtualenv && $(PYTHON) -m virtualenv --quiet $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lint,postgres]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator demo

test: $(STAMP)
	$(BIN)/python -m pytest

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lint,postgres,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py --quick

diagrams: $(STAMP)
	$(BIN)/orchestrator diagram --update --dir diagrams

soak: $(STAMP)
	ORCHESTRATOR_SOAK=1 $(BIN)/python -m pytest tests/campaigns -q -s --timeout=0

lint: $(STAMP)
	$(BIN)/ruff check orchestrator workflows tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
