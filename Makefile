# make demo: run the demo on ./state.  make test: the whole test suite.  make lint: ruff + mypy.
# The first use creates .venv and installs the project into it (again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || \
		{ rm -rf $(VENV); $(PYTHON) -m pip install --quiet --user virtualenv && $(PYTHON) -m virtualenv --quiet $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check orchestrator workflows tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
