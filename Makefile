# Every target makes (or reuses) its own virtual environment: nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := $(wildcard src tests benchmarks docs fuzz)

.DEFAULT_GOAL := help
.PHONY: help venv test lint typecheck pytest browser chromium pgbouncer wrk screenshots serve demo docs bench fuzz clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "appregistry needs Python 3.11 or newer (PYTHON=$(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,oauth2,docs,web,browser,bench]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with its test extras

lint: $(STAMP)  ## ruff: lint and formatting
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)  ## mypy --strict over src/
	$(BIN)/mypy

# The Node.js OAuth 2.0 clients the interop tests drive (openid-client, simple-oauth2), as
# the lock file pins them. Without npm the tests say why they skip (under CI=true they fail).
INTEROP := tests/interop
$(INTEROP)/node_modules: $(INTEROP)/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix $(INTEROP) --no-audit --no-fund; \
	else echo "npm is missing: the Node.js interop tests cannot run" >&2; fi

pytest: $(STAMP) $(INTEROP)/node_modules pgbouncer wrk  ## the test suite, docs and docstring examples included
	$(BIN)/pytest $(PYTEST_ARGS)

# Playwright drives Debian's Chromium: no browser can be downloaded here, so install the
# distribution's when it is missing (CI runs as root).
chromium:  ## install Debian's chromium if it is missing
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# The PostgreSQL tests and `make bench` run the backend through a PgBouncer of their own in
# transaction mode; install Debian's when it is missing (it lives in /usr/sbin).
pgbouncer:  ## install Debian's pgbouncer if it is missing
	command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer \
		|| (apt-get update && apt-get install -y pgbouncer)

# The HTTP rows of `make bench` (and their test) load the servers with wrk; install
# Debian's when it is missing.
wrk:  ## install Debian's wrk if it is missing
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)

# The browser suite runs apart from the rest: Playwright's sync API wants its own process.
browser: $(STAMP) chromium  ## the browser tests (tests/browser), clicking through an app's whole story
	$(BIN)/pytest -p no:cacheprovider tests/browser $(BROWSER_ARGS)

screenshots: $(STAMP) chromium  ## a PNG of every page, in build/screenshots/
	PYTHONPATH=tests $(BIN)/python -m browser.screenshots build/screenshots

serve: $(STAMP)  ## the pages and OAuth 2.0 endpoints on a scratch database, with the dev sign-in
	mkdir -p build
	$(BIN)/python -m appregistry --database sqlite:///build/serve.sqlite3 serve --dev-sign-in

test: lint typecheck pytest browser  ## everything CI runs

demo: $(STAMP)  ## the main job: walk through an app's story, registration to tokens
	$(BIN)/python -m appregistry demo

docs: $(STAMP)  ## build the HTML docs; warnings are errors
	$(BIN)/sphinx-build -W --keep-going -b html docs build/docs

bench: $(STAMP) pgbouncer wrk  ## benchmarks (see docs/performance.md)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Seconds each atheris harness runs for; FUZZ_ARGS go to every harness (e.g. -atheris_runs=N).
FUZZ_SECONDS ?= 30
fuzz: $(STAMP)  ## long Hypothesis profile, then each atheris harness (see fuzz/README.md)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -p no:cacheprovider tests/test_fuzz.py
	$(BIN)/python -m pip install --quiet atheris
	mkdir -p build/fuzz
	for harness in fuzz/fuzz_*.py; do \
		$(BIN)/python $$harness -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/ \
			-print_final_stats=1 $(FUZZ_ARGS) || exit 1; \
	done

clean:  ## remove the virtual environment and build output
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
