# One command surface for people and CI. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help

.PHONY: help install test test-fast lint format monitoring demo dev sandbox bench container-test clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/autoreply: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/autoreply ## Create .venv and install the project with its test extras

test: install ## Run the test suite
	$(BIN)/python -m pytest

test-fast: install ## The tests that start no server or process (seconds)
	$(BIN)/python -m pytest -m "not slow"

lint: install ## ruff (lint + format check), mypy --strict, the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

monitoring: install ## Regenerate the Grafana dashboard and the PrometheusRule (deploy/)
	$(BIN)/python deploy/grafana/generate.py
	$(BIN)/python deploy/k8s/monitoring/generate.py

demo: install ## Sandbox + service on SQLite: inject mail, print the replies, exit
	$(BIN)/autoreply demo

dev: install ## Sandbox + service together until Ctrl-C (try `autoreply sandbox send`)
	$(BIN)/autoreply dev

sandbox: install ## The local AgentMail sandbox alone, on 127.0.0.1:9100
	$(BIN)/autoreply sandbox

bench: install ## Benchmarks; figures go to docs/benchmarks.md
	$(BIN)/python bench/intake.py

container-test: install ## Build the image (podman or docker) and run it against the sandbox
	bash deploy/container-test.sh

clean: ## Remove the venv, caches and local databases
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .hypothesis .coverage* *.egg-info autoreply.db*
