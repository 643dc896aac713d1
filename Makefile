# Set-up and entry points. Everything installs into a local .venv; torch 2.13.0 (CPU wheel) goes first
# so that no other package pulls a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.semgraph-installed

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Train the reference grokking run with the recorder, analyze it into a landscape graph, export it.
demo: $(STAMP)
	$(BIN)/semgraph train modular-addition --out checkpoints/modadd-p53 --resume
	$(BIN)/semgraph analyze checkpoints/modadd-p53 --out results/modadd-p53

# Fast tier (a few minutes). `make test-all` adds the slow tier that trains the full reference run.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results
