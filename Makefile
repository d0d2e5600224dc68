# Two commands from a fresh clone: `make run` and `make test`. Everything goes into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test test-fast lint format bench asyncapi browser clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Antechamber needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml services/media/_fastpath.c | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml services/media/_fastpath.c | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/antechamber up

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/antechamber asyncapi --check
	$(BIN)/antechamber protocol-schema --check

# The browser tests drive Debian's Chromium (package `chromium`); installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }; \
	}

test: lint browser
	$(BIN)/pytest

# Skips the slow suites (chaos, platform, browser, benchmark smoke); CI runs everything.
test-fast: lint
	$(BIN)/pytest --fast

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

asyncapi: $(VENV)/.installed-run
	$(BIN)/antechamber asyncapi
	$(BIN)/antechamber protocol-schema

# Every bench/ script, one at a time, into docs/benchmarks.md (bench/web.py needs Chromium).
bench: $(VENV)/.installed-test browser
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .antechamber .pytest_cache .mypy_cache .ruff_cache test-artifacts
