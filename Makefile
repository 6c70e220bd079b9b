# Two commands a user needs: `make demo` and `make test`. Both build .venv from this repository's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records what was installed; it is rebuilt when the project or its pins change.
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test install install-dev benchmark clean

demo: $(STAMP)
	$(BIN)/cytolens demo --out runs/demo

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP_DEV)
	$(BIN)/python benchmarks/bench_microtubules.py

install: $(STAMP)
install-dev: $(STAMP_DEV)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" -c constraints.txt

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(STAMP_DEV): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP) $@

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
