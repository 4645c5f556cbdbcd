# All set-up happens here: `make run` and `make test` install what they need first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/default.toml

.PHONY: install run test bench lint format clean xvfb

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH (Python >= 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench,presenter,export,dev]'
	@touch $(STAMP)

# Xvfb is needed for the presenter when there is no display (installed once, Debian/Ubuntu).
xvfb:
	@if [ -z "$$DISPLAY" ] && ! command -v Xvfb >/dev/null; then \
		echo "installing xvfb (no display and no Xvfb found)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq xvfb >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq xvfb >/dev/null; fi; \
	fi

run: install xvfb
	$(BIN)/python -m control_room run $(CONFIG)

test: install xvfb
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install xvfb
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
