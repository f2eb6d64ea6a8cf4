# calix: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# The constraints file pins torch to its CPU wheel (never a CUDA build) for every install.
PIPFLAGS := --constraint constraints.txt

.PHONY: demo test lint bench docs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Stamp files record what was installed, so repeated runs skip the install.
$(VENV)/.runtime: $(BIN)/activate pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) install $(PIPFLAGS) -e ".[dev]"
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/calix demo --out results/demo

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q --durations=15

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

docs: $(VENV)/.runtime
	$(BIN)/python -m calix._apidoc docs/api.md

bench: $(VENV)/.dev
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) results .pytest_cache
