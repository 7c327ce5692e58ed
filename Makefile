# bigviz: `make demo` and `make test` each set everything up on a fresh machine.
# torch is pinned to the CPU build that lies on this disk and installed first, so the
# project's `torch>=...` range is already satisfied and pip never pulls a CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bigviz-installed
TORCH  ?= torch==2.13.0

.PHONY: setup demo test test-fast lint bench docs clean browser-deps tf4

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium for the real-browser tests (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "note: chromium missing and not root; browser tests will be skipped"; fi; }

# Transformers 4.4x beside the venv (never in it), for tests/integration/test_transformers4.py:
# the child interpreters run with PYTHONPATH=.tf4 (torch, numpy and the rest from the venv).
TF4 := .tf4
tf4: $(STAMP)
	@test -f $(TF4)/transformers/__init__.py || $(PY) -m pip install -q --target $(TF4) --no-deps \
	  "transformers==4.46.3" "tokenizers<0.21,>=0.20" "huggingface_hub<1.0,>=0.26"

# The main job: ~1 minute on 2 cores (8 runs of a 400 MB model, each in a fresh process).
demo: $(STAMP)
	mkdir -p reports
	$(PY) -m bigviz sweep --model gpt:400MB --strategies naive,sharded,meta,mmap \
	  --shard-sizes 50MB,200MB --format safetensors --device-map cpu \
	  --out reports/demo.html --json reports/demo.json --md reports/demo.md

test: $(STAMP) browser-deps tf4
	$(PY) -m ruff check bigviz tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser" -x -q

lint: $(STAMP)
	$(PY) -m ruff check bigviz tests benchmarks
	$(PY) -m ruff format --check bigviz tests benchmarks || true
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(TF4) site reports .pytest_cache .mypy_cache .ruff_cache
