# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Checkov pins old versions of shared libraries, so it gets an environment of its own.
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

export DIARY_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(DIARY_DATA_DIR)/dagster_home

.PHONY: install tools run ui serve test check benchmarks mutation clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: install  ## Process the committed example recordings end to end on the embedded defaults
	$(BIN)/diary run

ui: install  ## Dagster UI + daemon over the same data, landing sensor on
	$(BIN)/diary ui

serve: install  ## The HTTP API (diary serve) over the same data folder as `make ui`
	$(BIN)/diary serve

$(TOOLS_STAMP): deploy/tools-requirements.txt
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r deploy/tools-requirements.txt
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

test: install tools  ## The whole test suite, real model on real audio, and the deployment artefacts' checks
	$(BIN)/python -m pytest

check: install  ## Definitions load through dg, as `dg dev` would load them
	$(BIN)/dg check defs

benchmarks: install
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/wer.py
	$(BIN)/python benchmarks/storage.py

mutation: install  ## Mutation testing of the domain modules a silent regression would hurt most (minutes; not part of `test`)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,mutation]"
	rm -rf mutants
	$(BIN)/mutmut run
	$(BIN)/python benchmarks/mutation_report.py

clean:
	rm -rf data .pytest_cache mutants
