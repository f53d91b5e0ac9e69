# The README's two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The repository `make run` trains into and serves; given to those two recipes only, so that no
# other one (the tests, the benchmarks, the cluster runs) inherits it by accident.
SOFTSERVE_MODEL_REPOSITORY ?= ./artifacts
RUN_ENV := SOFTSERVE_MODEL_REPOSITORY=$(SOFTSERVE_MODEL_REPOSITORY)

.PHONY: install install-test run train serve test lint browser bench fuzz soak lock audit clean \
  swarm-two-node

## what running needs: training (torch, onnx) and serving (flask, gunicorn, onnxruntime)
install: $(VENV)/.installed

## install, plus the test tools (pytest, tritonclient, schemathesis, ruff, pip-audit, ...)
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	@echo "==> $(VENV): softserve with training (torch, onnx, matplotlib) and serving (flask," \
	  "gunicorn, onnxruntime); a minute or two the first time"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[train,serve]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "==> $(VENV): adding the test tools (pytest, tritonclient, schemathesis, ruff," \
	  "pip-audit, ...)"
	$(BIN)/pip install --progress-bar on -e '.[train,serve,test]'
	touch $@

## train the default Iris model unless the repository already has one
train: install
	$(RUN_ENV) $(BIN)/python -m training --if-empty

## serve the repository on port 8080
serve: install
	$(RUN_ENV) $(BIN)/gunicorn -c serving/gunicorn.conf.py "serving:create_app()"

run: train serve

test: lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Debian's chromium and chromium-driver for the browser tests (tests/ui), installed as root where
## missing; elsewhere those tests skip and say why (SOFTSERVE_REQUIRE_BROWSER=1 fails them instead)
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "==> installing $(BROWSER_PACKAGES) for the browser tests (tests/ui); a minute or two"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $(BROWSER_PACKAGES) || \
	    { apt-get update -q && apt-get install -y -q $(BROWSER_PACKAGES); }; \
	else \
	  echo "make test: /usr/bin/chromium or /usr/bin/chromedriver is missing and installing" \
	    "them needs root and apt-get: the browser tests (tests/ui) will be skipped." \
	    "Install them with: sudo apt-get install $(BROWSER_PACKAGES)" >&2; \
	fi

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache

## load benchmark, not a test: real gunicorn + wrk, against a no-op app on the same gunicorn command
## and a FastAPI + uvicorn baseline (the bench extra, installed here); writes docs/benchmarks.md
## and docs/benchmarks.png, scenarios then the axes of issue 20 (BENCH_SECONDS per scenario, default 8;
## BENCH_QUICK=1 for a quick run; BENCH_ARGS for python -m bench, see its --help)
bench: install-test
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	  else \
	    echo "make bench needs wrk, which is not on PATH: install it as root (apt-get install wrk)" >&2; \
	    exit 1; \
	  fi; }
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

## the fuzzers only, larger budgets: SOFTSERVE_FUZZ_EXAMPLES examples per generator (default 300)
SOFTSERVE_FUZZ_EXAMPLES ?= 300
fuzz: install-test
	SOFTSERVE_FUZZ_EXAMPLES=$(SOFTSERVE_FUZZ_EXAMPLES) $(BIN)/python -m pytest \
	  tests/reliability/test_fuzz_openapi.py tests/reliability/test_fuzz_v2.py \
	  tests/reliability/test_fuzz_csv.py $(PYTEST_ARGS)

## soak, not a test: 10 min at 80% of the measured maximum rate, a version published and rolled
## back every minute; writes docs/reliability.md (SOAK_ARGS for python -m soak.run, see its --help)
soak: install
	$(BIN)/python -m soak.run $(SOAK_ARGS)

## audit requirements/serve.lock: pip-audit against PyPI's vulnerability data, then PyPI's project
## JSON for what pip-audit could not look up; prints what was audited, what could not be (and
## why) and the known vulnerabilities; fails on a known vulnerability only (make test runs the
## same audit). AUDIT_ARGS for requirements/audit.py, see its --help
audit: install-test
	$(BIN)/python requirements/audit.py $(AUDIT_ARGS)

## re-pin requirements/serve.lock (base + serve dependencies, with hashes) from pyproject.toml
lock: install-test
	$(BIN)/pip-compile --quiet --extra serve --generate-hashes --no-emit-index-url \
	  --no-emit-find-links --strip-extras --output-file requirements/serve.lock pyproject.toml

## deploy/stack.yml on a two-node Docker Swarm made on this machine (a second dockerd in a network
## namespace of its own; images through Debian's docker-registry): replicas on both nodes serve
## the same versions from the object store. As root, with DOCKER_HOST set
## (eval "$$(.ci/docker-engine.sh)"); removes everything it made. Not part of make test; .ci/run runs it after.
swarm-two-node:
	deploy/two-node.sh
