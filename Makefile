# `make run` and `make test` both start from nothing: they create .venv and install the
# project whenever pyproject.toml is newer than the last install. `make run` installs only
# what running needs; everything else (tests, lint) installs the dev extra too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: run test lint schemas sample clean test-image

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

# Without the dev extra (Playwright, schemathesis, mypy...): a few tens of MB, not 400.
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

run: $(RUNTIME)
	$(BIN)/gitops-orchestrator demo

lint: $(INSTALLED)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# The page tests drive Debian's Chromium (never a browser that Playwright would download).
test: lint
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium fonts-liberation)
	$(BIN)/pytest

# The container image, built with a real Docker engine that the script starts (as root; it
# installs Debian's docker.io, docker-compose and debootstrap when missing), and the compose
# demo run end to end. No registry is used: the base image is made with debootstrap.
test-image:
	bash tests/image/run.sh

# Regenerate what is generated and checked in (tests fail when these are stale).
schemas: $(INSTALLED)
	$(BIN)/python -m gitops_orchestrator.schemas
	$(BIN)/python -m gitops_orchestrator.web.openapi_doc

sample: $(INSTALLED)
	$(BIN)/python sample-repo/build.py

# The demo's data (repository copy, database, devices) is kept: say how to reset it.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	@echo "kept the demo's data; reset it with: rm -rf .gitops-orchestrator/demo"
