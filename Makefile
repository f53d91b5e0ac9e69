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
