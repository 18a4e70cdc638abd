# Everyday verbs. `make run` starts the platform; `make test` runs every test tier on every backend.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Django 6 needs Python 3.12+; the machine's python3 is 3.11, so find 3.12 (PATH, then pyenv).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
BACKENDS ?= embedded postgres-redis postgres-rabbitmq
PYTEST_ARGS ?=

.PHONY: help venv run setup test test-backend lint format chaos bench bench-quick clean

help:
	@echo "make run     set up (venv, migrate, admin user) and start web, agents, beat, Flower, broker"
	@echo "make test    lint, then every test tier on: $(BACKENDS)"
	@echo "make chaos   the chaos tier at full size (200 items, 30 s broker outage); CHAOS_CLOCKS=default for production clocks"
	@echo "make lint    ruff check + format check"
	@echo "make bench   Shepherd vs bare Celery (B1-B6) on PostgreSQL, Redis, RabbitMQ; ~25 min"

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found (python3.12 or ~/.pyenv/versions/3.12*)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON312) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(BIN)/.installed

setup: venv
	$(BIN)/python manage.py setup

run: setup
	@echo
	@echo "  Shepherd admin console : http://127.0.0.1:8000/admin/  (user $${SHEPHERD_ADMIN_USER:-admin}, password in var/admin_password unless SHEPHERD_ADMIN_PASSWORD is set)"
	@echo "  Flower                 : http://127.0.0.1:5555/        (same credentials)"
	@echo "  Try: $(BIN)/python manage.py submit demo.sleep --payload '{\"seconds\": 1}' --count 100 && $(BIN)/python manage.py wait"
	@echo
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Unit tests need no services, so they run once; every other tier runs per backend.
test: lint
	@status=0; first=1; \
	for backend in $(BACKENDS); do \
		echo "=== backend: $$backend ==="; \
		if [ $$first = 1 ]; then \
			SHEPHERD_TEST_BACKEND=$$backend $(BIN)/pytest $(PYTEST_ARGS) || status=1; first=0; \
		else \
			SHEPHERD_TEST_BACKEND=$$backend $(BIN)/pytest -m "not unit" $(PYTEST_ARGS) || status=1; \
		fi; \
	done; exit $$status

test-backend: venv
	SHEPHERD_TEST_BACKEND=$(BACKEND) $(BIN)/pytest $(PYTEST_ARGS)

# The chaos tier at the issue's sizes (make test runs a short version of each scenario).
# CHAOS_CLOCKS=default replaces the test clocks with the production defaults, to check the
# recovery bound (AGENT_DEAD_AFTER + SUPERVISOR_INTERVAL + 2 s) as it would be in production.
CHAOS_CLOCKS ?= test
DEFAULT_CLOCKS := AGENT_HEARTBEAT_SECONDS=5 AGENT_DEAD_AFTER=15 WORK_ITEM_LEASE_SECONDS=30 \
	WORK_ITEM_LEASE_RENEW_SECONDS=5 SUPERVISOR_INTERVAL_SECONDS=5 REDISPATCH_AFTER=60 \
	RETRY_BACKOFF_BASE_SECONDS=2 RETRY_BACKOFF_MAX_SECONDS=300 SHEPHERD_CAPACITY_CACHE_SECONDS=2
chaos: venv
	@status=0; for backend in $(BACKENDS); do \
		env $(if $(filter default,$(CHAOS_CLOCKS)),$(DEFAULT_CLOCKS)) CHAOS_FULL=1 SHEPHERD_TEST_BACKEND=$$backend \
			$(BIN)/pytest tests/chaos $(PYTEST_ARGS) || status=1; \
	done; exit $$status

# Needs the PostgreSQL, Redis and RabbitMQ servers (README: Performance).
bench: venv
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: venv
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) staticfiles var/test
