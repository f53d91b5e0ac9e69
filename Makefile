# The README's two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOFTSERVE_MODEL_REPOSITORY ?= ./artifacts
export SOFTSERVE_MODEL_REPOSITORY

.PHONY: install run train serve test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,test]'
	touch $@

## train the default Iris model unless the repository already has one
train: install
	$(BIN)/python -m training --if-empty

## serve the repository on port 8080
serve: install
	$(BIN)/gunicorn -c serving/gunicorn.conf.py "serving:create_app()"

run: train serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

## load benchmark, not a test: real gunicorn + wrk; writes docs/benchmarks.md and docs/benchmarks.png
## (BENCH_SECONDS per scenario, default 10; BENCH_ARGS for bench/run.py, see its --help)
bench: install
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; \
	  else \
	    echo "make bench needs wrk, which is not on PATH: install it as root (apt-get install wrk)" >&2; \
	    exit 1; \
	  fi; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)
