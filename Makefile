# Needs only python3 (3.11+), pip and make: Redis and SQL are embedded by default.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test bench lint install install-dev browser clean wheel-check web web-test

# The dashboard's browser tests drive Debian's Chromium through its chromedriver, and the
# HTTP bench's test drives wrk; installed here when missing (root, or sudo). A stale package
# list is refreshed once and retried.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver wrk

# The stamps make install rerun only when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/creditmeter up

browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver -a -x /usr/bin/wrk || $(APT_INSTALL) || \
	  ($(SUDO) apt-get update -q && $(APT_INSTALL))

test: install-dev browser web web-test
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The frontend kit (web/) and its example page (examples/web/), with node and npm: `npm ci`
# installs exactly web/package-lock.json; each step reruns only when its inputs change.
WEB_SRC := $(wildcard web/src/*.ts) web/package.json web/tsconfig.json web/tsconfig.build.json
WEB_EXAMPLE_SRC := $(wildcard examples/web/src/*) examples/web/index.html web/vite.example.config.ts

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

web/dist/index.js: web/node_modules/.installed web/vite.config.ts $(WEB_SRC)
	cd web && npm run --silent build

examples/web/dist/index.html: web/node_modules/.installed $(WEB_SRC) $(WEB_EXAMPLE_SRC)
	cd web && npm run --silent typecheck && npm run --silent build:example

web: web/dist/index.js examples/web/dist/index.html

# Vitest: the client's parsing, backoff and token refresh (the browser test is pytest's).
web/node_modules/.tested: web/node_modules/.installed $(WEB_SRC) $(wildcard web/test/*.ts)
	cd web && npm test --silent
	touch $@

web-test: web/node_modules/.tested

bench: install
	$(BIN)/python -m bench

# The wheel a user installs, checked from a fresh venv outside the tree (.ci/wheel_check.sh).
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel_check.sh

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # strict, over the packages pyproject.toml's [tool.mypy] names

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist
