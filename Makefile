# Tessera: build, lint and test.
#   make test   release build, then the Rust tests and the boto3 + AWS CLI conformance suite,
#               once on SQLite and once on PostgreSQL (TESSERA_TEST_POSTGRES_URL and
#               TESSERA_CONFORMANCE_POSTGRES_URL name the server, default postgres://root@127.0.0.1:5432/test)
#   make lint   rustfmt check and clippy with warnings as errors
#   make serve  run the server; TESSERA_DATA_DIR and TESSERA_LISTEN override the defaults below
#   make fuzz   every fuzz target for FUZZ_SECONDS each (default 60), then the stores'
#               model-based property test with MODEL_CASES cases per backend (default 500)

CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=

VENV_PY := $(VENV)/bin/python
STAMP   := $(VENV)/.requirements.stamp

SERVE_DATA_DIR ?= tessera-data
SERVE_LISTEN   ?= 127.0.0.1:7070

FUZZ_SECONDS ?= 60
MODEL_CASES  ?= 500

.PHONY: all build test rust-test rust-test-pg conformance conformance-pg venv lint fmt-check clippy serve clean-venv fuzz js-sdk

all: build

build:
	$(CARGO) build --release -p tessera

# The store's own tests run every check on both backends in either pass; the
# PostgreSQL pass runs the server's integration tests on PostgreSQL as well.
rust-test:
	TESSERA_TEST_DATABASE=sqlite $(CARGO) test --workspace

rust-test-pg:
	TESSERA_TEST_DATABASE=postgres $(CARGO) test -p tessera --test it

# The venv is (re)built when it is missing, broken, or older than the requirements.
venv: $(STAMP)

$(STAMP): conformance/requirements.txt
	@if ! $(VENV_PY) -c 'import sys' >/dev/null 2>&1; then \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install --disable-pip-version-check --no-input -q -r conformance/requirements.txt
	touch $@

# The AWS SDK for JavaScript, for its conformance test (skipped where npm is missing).
JS_SDK := conformance/js/node_modules/.package-lock.json

js-sdk: $(JS_SDK)

$(JS_SDK): conformance/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd conformance/js && npm ci --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the JavaScript SDK test will be skipped"; \
	fi

conformance: venv js-sdk
	TESSERA_CONFORMANCE_DATABASE=sqlite $(VENV_PY) -m pytest -q conformance $(PYTEST_ARGS)

# Every server of the suite on a fresh PostgreSQL database.
conformance-pg: venv js-sdk
	TESSERA_CONFORMANCE_DATABASE=postgres $(VENV_PY) -m pytest -q conformance $(PYTEST_ARGS)

test:
	$(MAKE) build
	$(MAKE) rust-test
	$(MAKE) rust-test-pg
	$(MAKE) conformance
	$(MAKE) conformance-pg

lint: fmt-check clippy

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

serve:
	TESSERA_DATA_DIR="$${TESSERA_DATA_DIR:-$(SERVE_DATA_DIR)}" TESSERA_LISTEN="$${TESSERA_LISTEN:-$(SERVE_LISTEN)}" \
		$(CARGO) run --release -p tessera -- serve

fuzz:
	fuzz/run $(FUZZ_SECONDS)
	TESSERA_MODEL_CASES=$(MODEL_CASES) $(CARGO) test --release -p tessera-store --test store model

clean-venv:
	rm -rf $(VENV)
