# Developer tasks. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test lint format constraints check bench clean

$(STAMP): pyproject.toml constraints.txt
	@# System packages the tests use, when we can install them: Debian's chromium (the browser tests)
	@# and postgresql (the DuckLake tests start their own PostgreSQL server: tests/pg_server.py).
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	  [ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "note: $$missing not installed; the tests that need it will be skipped outside CI"; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## generate demo exports for the five partners and load them
	$(BIN)/cdv-etl demo

test: install  ## the whole test suite, a worker per core (pytest-xdist; one Prefect server for all of them)
	$(BIN)/pytest -n auto

lint: install  ## ruff (lint and format) and mypy; each one fails the target
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cdv_etl schemas flows bench

format: install  ## apply ruff's formatter and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test  ## what CI runs

constraints: install  ## refresh constraints.txt from the environment (after changing pyproject.toml)
	$(BIN)/pip freeze --exclude-editable | sort -f > constraints.txt

clean:
	rm -rf $(VENV) demo build dist .pytest_cache .mypy_cache .ruff_cache

bench: install  ## ingest benchmarks (10k to 5M rows; see bench/README.md)
	$(BIN)/python -m bench.harness
