# Two commands a user needs: `make demo` and `make test`. Both build .venv from this repository's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records what was installed; it is rebuilt when the project or its pins change.
STAMP := $(VENV)/.installed
STAMP_DEV := $(VENV)/.installed-dev
STAMP_PEER := $(VENV)/.installed-peer

.PHONY: demo test install install-dev bench clean

demo: $(STAMP)
	$(BIN)/cytolens demo --out runs/demo

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q

# Writes benchmarks/results/<date>-<host>.json and .md (benchmarks/README.md). The Keras peer needs the `peer`
# extra (TensorFlow); when it cannot be installed the bench runs without it and says so in its results.
bench: $(STAMP)
	-$(MAKE) --no-print-directory $(STAMP_PEER)
	$(BIN)/cytolens bench

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

$(STAMP_PEER): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,peer]"
	touch $(STAMP) $(STAMP_DEV) $@

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
