# `make run` and `make test` both start from nothing: they create .venv and install the
# project with its dev extra whenever pyproject.toml is newer than the last install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint schemas sample clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/gitops-orchestrator demo

lint: $(INSTALLED)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The page tests drive Debian's Chromium (never a browser that Playwright would download).
test: lint
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium fonts-liberation)
	$(BIN)/pytest

# Regenerate what is generated and checked in (tests fail when these are stale).
schemas: $(INSTALLED)
	$(BIN)/python -m gitops_orchestrator.schemas
	$(BIN)/python -m gitops_orchestrator.web.openapi_doc

sample: $(INSTALLED)
	$(BIN)/python sample-repo/build.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
