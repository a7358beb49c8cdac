# Steward's developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTO_FILES = $(shell find protos -name '*.proto' | sort)
AREAS := common store provider confirm runtime
STAMP := $(VENV)/.installed
# schemathesis pins conflict with ours (docs/field-notes.md): it gets a virtualenv of its own, used only by fuzz-api.
FUZZ_VENV := .venv-fuzz
SCHEMATHESIS_VERSION := 4.32.5
FUZZ_STAMP := $(FUZZ_VENV)/.installed-$(SCHEMATHESIS_VERSION)

.PHONY: help setup run run-fake-llm test lint typecheck generate check-generate check-migrations buf-lint buf-breaking ci bench clean
.PHONY: fuzz-api docs chaos vendor check-vendor browser

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

$(FUZZ_STAMP):
	rm -rf $(FUZZ_VENV)
	$(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FUZZ_VENV)/bin/python -m pip install --quiet 'schemathesis==$(SCHEMATHESIS_VERSION)'
	touch $(FUZZ_STAMP)

$(BUF):
	npm install --silent --no-save --no-package-lock --prefix .tools @bufbuild/buf@$(BUF_VERSION)

setup: $(STAMP) $(BUF) ## Install everything the stack, tests and checks need (venv, pip packages, buf).

run: $(STAMP) ## Start the whole stack on embedded defaults (SQLite, demo model) and print the URL and a dev token.
	$(PY) -m cli up

run-fake-llm: $(STAMP) ## Like run, but the default agent talks to a local fake OpenAI-compatible upstream.
	$(PY) -m cli up --fake-llm

test: $(STAMP) browser ## Run the test suite (the browser tests need Chromium: see the browser target).
	$(PY) -m pytest

browser: ## Install Debian's Chromium for the browser tests when it is missing and we are root; otherwise say so.
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "browser: installing Debian's chromium for tests/browser/"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "browser: /usr/bin/chromium is missing and cannot be installed here (not root, or no apt-get):" \
	  "the browser tests (tests/browser/) will be skipped, or fail with CI=true. Install it: sudo apt-get install chromium"; fi

vendor: $(STAMP) ## Install the pinned web modules (gateway/web/vendor/pins.json) from npm into a scratch folder and bundle them (needs npm).
	$(PY) -m tests.support.web_vendor vendor

check-vendor: $(STAMP) ## Check the vendored web modules against their pins and manifest (no npm).
	$(PY) -m tests.support.web_vendor check

generate: $(STAMP) ## Regenerate Python code from protos/ into libs/steward/<area>/v1.
	@for a in $(AREAS); do rm -f libs/steward/$$a/v1/*_pb2*.py libs/steward/$$a/v1/*_pb2*.pyi; done
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=libs --grpc_python_out=libs --mypy_out=libs --mypy_grpc_out=libs $(PROTO_FILES)
	@for a in $(AREAS); do touch libs/steward/$$a/__init__.py libs/steward/$$a/v1/__init__.py; done

check-generate: $(STAMP) ## Fail when the committed generated code differs from what protos/ generates.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO_FILES); \
	for a in $(AREAS); do touch $$tmp/steward/$$a/__init__.py $$tmp/steward/$$a/v1/__init__.py; \
	  diff -r -x __pycache__ $$tmp/steward/$$a libs/steward/$$a || { echo "generated code for $$a is stale: run 'make generate'"; exit 1; }; \
	done; echo "generated code is up to date"

check-migrations: $(STAMP) ## alembic upgrade head + alembic check against a scratch SQLite database
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	run() { local service=$$1 db=$$2; shift 2; echo "check-migrations: $$service: alembic $$* ($$db.db)"; \
	  STEWARD_DATABASE_URL=sqlite+aiosqlite:///$$tmp/$$db.db $(VENV)/bin/alembic -c services/$$service/alembic.ini "$$@"; }; \
	for s in store provider confirm; do run $$s $$s upgrade head; run $$s $$s check; done; \
	for s in store provider confirm; do run $$s shared upgrade head; done; \
	for s in store provider confirm; do run $$s shared check; done

buf-lint: $(BUF) ## Lint (STANDARD) and format-check the protos.
	cd protos && ../$(BUF) lint && ../$(BUF) format --diff --exit-code

buf-breaking: $(BUF) ## Check the protos for breaking changes (FILE) against main, or the previous commit on main.
	@if git rev-parse --verify --quiet main >/dev/null && [ "$$(git rev-parse main)" != "$$(git rev-parse HEAD)" ]; then ref=main; \
	elif git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:protos/buf.yaml 2>/dev/null; then ref=HEAD~1; \
	else echo "buf breaking: no earlier revision with protos/ to compare against"; exit 0; fi; \
	echo "buf breaking against $$ref"; cd protos && ../$(BUF) breaking --against "../.git#ref=$$ref,subdir=protos"

lint: $(STAMP) buf-lint check-vendor ## ruff (lint + format check), import boundaries, the vendored web modules.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP) ## mypy --strict over libs, services, gateway, cli and tests.
	$(VENV)/bin/mypy

fuzz-api: $(STAMP) $(FUZZ_STAMP) ## Fuzz the HTTP API from its OpenAPI document (schemathesis, bounded) against a fresh stack.
	$(PY) -m tests.gateway.fuzz_api

docs: $(STAMP) ## Regenerate docs/configuration.md from the settings classes.
	$(PY) -m tests.support.config_reference

ci: setup lint typecheck check-generate check-migrations buf-breaking fuzz-api test ## Everything CI checks.

bench: $(STAMP) ## Run the benchmarks.
	$(PY) -m bench

CHAOS_ARGS ?=
chaos: $(STAMP) ## Run the chaos suite at full scale on SQLite and Postgres (CHAOS_ARGS="--write FILE F3 ..." to narrow or record).
	$(PY) -m chaos --scale full --db both $(CHAOS_ARGS)

clean: ## Remove the venv, tools and caches (not the data directory).
	rm -rf $(VENV) $(FUZZ_VENV) .tools .mypy_cache .ruff_cache .pytest_cache
