# All set-up happens here: `make run` and `make test` install what they need first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/default.toml
# Containers (docs/containers.md): ENGINE = auto (a running dockerd, else podman), podman or docker.
ENGINE ?= auto
NETNS ?=

.PHONY: install run test bench lint format clean xvfb

install: $(STAMP)

# iblutil is the peer of the iblrig interop tests (docs/sessions.md). Its network part needs only
# colorlog and numpy, its full dependency set is ~700 MB (numba, pandas...), and pip extras cannot
# say --no-deps: so it is installed here with --no-deps, not listed in pyproject.toml.
$(STAMP): pyproject.toml Makefile
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH (Python >= 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench,presenter,export,dev]'
	$(BIN)/python -m pip install -q 'colorlog>=6' && $(BIN)/python -m pip install -q --no-deps 'iblutil==1.20.0'
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

# -- containers (docs/containers.md) ------------------------------------------------------------
# compose-engine: install/configure podman + podman-compose (or ENGINE=docker: docker.io, dockerd)
# compose-base:   Debian base image from the Debian mirror (debootstrap), for machines with no registry
# image:          build closedloop-mesh:latest (BASE_IMAGE=local: on that base); says what to do
#                 when the registry cannot be reached
# compose-test:   build, compose up, healthchecks, a ~25 s experiment macro, XDF check, compose down
#                 (several minutes on a fresh machine; NETNS=name runs the stack in `ip netns` name)
# compose-clean:  remove the local base image (and stop a dockerd that compose-engine started)
.PHONY: compose-engine compose-base image compose-test compose-clean

compose-engine: install
	$(BIN)/python tools/containers/engine.py setup --engine $(ENGINE)

compose-base: install
	$(BIN)/python tools/containers/base.py --engine $(ENGINE)

image: install
	$(BIN)/python tools/containers/build.py --engine $(ENGINE) $(if $(BASE_IMAGE),--base $(BASE_IMAGE))

compose-test: install
	$(BIN)/python tools/containers/compose_test.py --engine $(ENGINE) $(if $(NETNS),--netns $(NETNS))

compose-clean: install
	$(BIN)/python tools/containers/base.py --engine $(ENGINE) --remove
	$(BIN)/python tools/containers/engine.py stop-dockerd
