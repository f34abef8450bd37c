# The two commands that matter: `make demo` (the main job) and `make test`.
# Both set up what they need first, idempotently: Debian packages, then a venv at .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# moto (a local S3 server for the backup tests) pins python-dateutil<3, which the kubernetes
# client refuses: it lives in a venv of its own.
MOTO := .venv-moto/bin/moto_server
# checkov (tests/integration/render/test_checkov.py) pins dependencies of its own too. Pinned
# exactly: a new release adds checks, and the committed allowlist is checked against this one's.
CHECKOV := .venv-checkov/.installed
# The official OpenFeature SDKs and providers from npm (tests/integration/flags/test_ofrep_node.py),
# pinned by tests/node/package-lock.json.
NODE_TESTS := tests/node/node_modules/.installed
DEMO_OUT ?= out/demo

.PHONY: help install test lint typecheck unit demo bench clean

help:
	@echo "make demo   all of shipyard at work here: releases under load, backup, DR drill, Apricode plan"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench  run the benchmarks and write bench/results/"

install: $(STAMP)
	@bash scripts/install-system.sh

$(STAMP): pyproject.toml
	@bash scripts/install-system.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

$(MOTO):
	python3 -m venv .venv-moto
	.venv-moto/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'

$(CHECKOV):
	python3 -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check 'checkov==3.3.30'
	@touch $(CHECKOV)

$(NODE_TESTS): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	@touch $(NODE_TESTS)

unit: install
	@# The pure tests only: no server, no network, no datastore or proxy process (those are in
	@# tests/integration). Two workers: about 25 s here instead of about 40 s on one.
	$(VENV)/bin/pytest -q -n 2 tests/unit

test: install $(MOTO) $(CHECKOV) $(NODE_TESTS) lint typecheck
	@# A file's tests (and its servers) stay on one worker. Four workers on two cores: the long
	@# tests mostly wait (a channel down for a minute, a lease left to lapse, a scheduler watched
	@# for a minute).
	$(VENV)/bin/pytest -q -n 4 --dist loadfile --durations=25

demo: install
	bash scripts/demo.sh $(DEMO_OUT)

bench: install
	@(command -v wrk && (command -v nginx || test -x /usr/sbin/nginx)) >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx)
	$(PY) bench/startup_bench.py --write
	$(PY) bench/render_bench.py --write
	$(PY) bench/flags_bench.py
	$(PY) bench/flags_server_bench.py --write
	$(PY) bench/flags_propagation_bench.py --write
	@# the null demo app, then apps doing 100 and 200 µs of CPU per request (a proxy's share of the
	@# work shrinks as the app's grows; see bench/rollout_bench.py)
	$(PY) bench/rollout_bench.py --write
	$(PY) bench/rollout_bench.py --work-us 100 --write
	$(PY) bench/rollout_bench.py --work-us 200 --write
	$(PY) bench/backup_bench.py --write
	$(PY) bench/schemathesis_full.py --write

clean:
	rm -rf out rendered .pytest_cache .mypy_cache .ruff_cache .hypothesis
