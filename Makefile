# The project's vocabulary. Every target sets up what it needs (a virtualenv under .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench protos lint check-protos clean help

help:
	@echo "make run      start Redis, PostgreSQL and the budget service (127.0.0.1:50051)"
	@echo "make test     run the whole test suite against real Redis and PostgreSQL"
	@echo "make bench    measure budget calls per second against a trivial-RPC ceiling"
	@echo "make protos   regenerate genproto/ from protos/"
	@echo "make lint     ruff, mypy --strict, buf lint and buf breaking against main"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devstack

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ledger

protos: $(STAMP)
	$(BIN)/python tools/gen_protos.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy servicekit budget_service pricing_service devstack bench budgetctl budget_client examples
	$(BIN)/buf lint
	$(BIN)/buf breaking --against '.git#branch=main'

clean:
	rm -rf $(VENV) build *.egg-info clients/node/node_modules
