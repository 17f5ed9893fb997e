# Tessera: build, lint and test.
#   make test   release build, the Rust tests, then the boto3 + AWS CLI conformance suite
#   make lint   rustfmt check and clippy with warnings as errors
#   make serve  run the server; TESSERA_DATA_DIR and TESSERA_LISTEN override the defaults below

CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=

VENV_PY := $(VENV)/bin/python
STAMP   := $(VENV)/.requirements.stamp

SERVE_DATA_DIR ?= tessera-data
SERVE_LISTEN   ?= 127.0.0.1:7070

.PHONY: all build test rust-test conformance venv lint fmt-check clippy serve clean-venv

all: build

build:
	$(CARGO) build --release -p tessera

rust-test:
	$(CARGO) test --workspace

# The venv is (re)built when it is missing, broken, or older than the requirements.
venv: $(STAMP)

$(STAMP): conformance/requirements.txt
	@if ! $(VENV_PY) -c 'import sys' >/dev/null 2>&1; then \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install --disable-pip-version-check --no-input -q -r conformance/requirements.txt
	touch $@

conformance: venv
	$(VENV_PY) -m pytest -q conformance $(PYTEST_ARGS)

test:
	$(MAKE) build
	$(MAKE) rust-test
	$(MAKE) conformance

lint: fmt-check clippy

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

serve:
	TESSERA_DATA_DIR="$${TESSERA_DATA_DIR:-$(SERVE_DATA_DIR)}" TESSERA_LISTEN="$${TESSERA_LISTEN:-$(SERVE_LISTEN)}" \
		$(CARGO) run --release -p tessera -- serve

clean-venv:
	rm -rf $(VENV)
