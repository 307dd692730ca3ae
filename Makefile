# Developer entry points. `make demo` and `make test` are the two a newcomer needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv prereqs checkov test unit integration e2e lint demo demo-down cluster-up cluster-down cluster-status bench bench-quick kind-up binaries

## What a fresh machine lacks, installed or demanded in one line (the same step .ci/run takes).
prereqs:
	bash hack/ensure-prereqs.sh --for test

$(PY):
	bash hack/ensure-prereqs.sh --for venv

venv: $(PY)

binaries:
	bash hack/build-binaries.sh

## checkov lives in a side venv in the cache (its pins clash with ours); the chart's scan test needs it.
checkov:
	bash hack/checkov.sh --install >/dev/null

## The whole suite: unit, integration (real Redis) and e2e (real control plane, started on demand).
test: prereqs
	$(VENV)/bin/pytest -rs $(PYTEST_ARGS)

unit: $(PY)
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

integration: $(PY)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

e2e: $(PY)
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Its own local control plane (.local/demo/), Redis, operator and workers; applies examples/job.yaml.
## The tests never use it: they run their own (.local/), so both may run at once.
demo:
	bash hack/demo.sh up

## Stops what `make demo` started, its control plane included; the tests' clusters keep running.
demo-down:
	bash hack/demo.sh down

cluster-up: $(PY)
	bash hack/local-cluster.sh up

## The tests' control planes (.local/ and .local/clusterwide/); the demo's is left alone.
cluster-down:
	bash hack/local-cluster.sh down

cluster-status:
	bash hack/local-cluster.sh status

## Every benchmark suite against its peers (docs/benchmarks.md); the plots need the bench extra.
bench: $(PY)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks all

## Every suite, small (under 3 minutes warm): CI runs it so the benchmarks never rot; nothing asserted.
bench-quick: $(PY)
	$(PY) -m benchmarks all --quick

## For machines with Docker: kind cluster, images, helm install, examples.
kind-up:
	bash hack/kind-up.sh
